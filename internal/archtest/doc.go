// Package archtest holds the repository's architecture tests: the import rules that
// docs/architecture.md states (which packages may depend on which), in the spirit of
// tailscale's depaware/deptest, and the rule that every package under internal/ and
// cmd/ has a package doc comment. It has no code of its own; see its tests.
package archtest
