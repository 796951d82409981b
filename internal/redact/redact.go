// Package redact keeps secrets (tokens, passwords) out of log lines and error texts by
// replacing every occurrence with a fixed marker.
package redact

import (
	"errors"
	"slices"
	"strings"
)

// Mark replaces a secret.
const Mark = "<redacted>"

// String returns s with every occurrence of each non-empty secret replaced by Mark. It
// replaces in one pass, longest secret first where two overlap, so that no part of a
// longer secret is left and no secret is looked for inside a Mark already written.
func String(s string, secrets ...string) string {
	var pairs []string
	for _, sec := range secrets {
		if sec != "" {
			pairs = append(pairs, sec)
		}
	}
	if len(pairs) == 0 {
		return s
	}
	slices.SortStableFunc(pairs, func(a, b string) int { return len(b) - len(a) })
	for i := len(pairs) - 1; i >= 0; i-- {
		pairs = slices.Insert(pairs, i+1, Mark)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// Error returns err itself when its text contains none of the secrets (so errors.Is and
// errors.As still see its chain), and otherwise a new error with the redacted text: the
// original chain is dropped, since any error in it could print the secret.
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := String(msg, secrets...); red != msg {
		return errors.New(red)
	}
	return err
}
