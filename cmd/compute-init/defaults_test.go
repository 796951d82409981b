package main

import (
	"testing"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/cmd/internal/flagtest"
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
	flagtest.CheckDefaults(t, k.Model.Node, paths.Vars(), map[string]string{
		"state-dir":            "/run/compute",
		"config":               "/etc/compute/config.json",
		"pgdata":               "/var/db/postgres/compute",
		"pgbin":                "/usr/lib/postgresql/15/bin/postgres",
		"connstr":              "postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres",
		"compute-id":           "compute-local",
		"privileged-role-name": "neon_superuser",
		"internal-http-port":   "3081",
		"warmup":               "true",
	})
}
