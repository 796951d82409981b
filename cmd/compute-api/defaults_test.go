package main

import (
	"testing"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/paths"
)

// TestFlagDefaultsFromPaths checks that every flag with an environment variable and a
// default takes that default from internal/paths, and that the values are today's.
func TestFlagDefaultsFromPaths(t *testing.T) {
	var c cli
	k, err := kong.New(&c, kong.Vars(paths.Vars()))
	if err != nil {
		t.Fatal(err)
	}
	checkFlagDefaults(t, k.Model.Node, paths.Vars(), map[string]string{
		"state-dir":          "/run/compute",
		"config":             "/etc/compute/config.json",
		"compute-id":         "compute-local",
		"external-http-port": "3080",
		"internal-http-port": "3081",
		"internal-http-addr": "127.0.0.1",
		"pgbin":              "/usr/lib/postgresql/15/bin/postgres",
		"tls-poll-interval":  "60s",
	})
}

func checkFlagDefaults(t *testing.T, root *kong.Node, vars map[string]string, want map[string]string) {
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
