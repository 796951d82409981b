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
		"state-dir":           "/run/compute",
		"config":              "/etc/compute/config.json",
		"compute-id":          "compute-local",
		"external-http-port":  "3080",
		"internal-http-port":  "3081",
		"internal-http-addr":  "127.0.0.1",
		"pgbin":               "/usr/lib/postgresql/15/bin/postgres",
		"tls-poll-interval":   "60s",
		"read-header-timeout": "10s",
		"read-timeout":        "60s",
		"write-timeout":       "60s",
		"idle-timeout":        "120s",
		"max-connections":     "128",
		"max-body-bytes":      "2097152",
		"configure-parses":    "2",
		"connstr":             "postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres",
	})
}
