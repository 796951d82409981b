// Package flagtest checks the flags of a kong command line against internal/paths, for the
// tests of both binaries (kong stays under cmd/: nothing in internal/ imports it).
package flagtest

import (
	"testing"

	"github.com/alecthomas/kong"
)

// CheckDefaults checks that every flag of root with an environment variable and a default
// takes that default from vars (keyed by the variable), and that the flags named in want
// exist and have the given defaults.
func CheckDefaults(t testing.TB, root *kong.Node, vars map[string]string, want map[string]string) {
	t.Helper()
	seen := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if len(f.Envs) == 0 || !f.HasDefault || f.Default == "" {
				continue
			}
			seen[f.Name] = true
			v, ok := vars[f.Envs[0]]
			if !ok {
				t.Errorf("--%s (%s) has default %q that is not in paths.Vars", f.Name, f.Envs[0], f.Default)
				continue
			}
			if f.Default != v {
				t.Errorf("--%s default %q, paths.Vars()[%s] = %q", f.Name, f.Default, f.Envs[0], v)
			}
			if w, ok := want[f.Name]; ok && f.Default != w {
				t.Errorf("--%s default %q, want %q", f.Name, f.Default, w)
			}
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(root)
	for name := range want {
		if !seen[name] {
			t.Errorf("no flag --%s with an environment variable and a default", name)
		}
	}
}
