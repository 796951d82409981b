package compute

import (
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

func TestFatalLines(t *testing.T) {
	log := `2026-11-22 03:46:18.338 GMT [343] LOG:  invalid value for parameter "shared_buffers": "lots"
2026-11-22 03:46:18.340 GMT [343] FATAL:  configuration file "/var/db/postgres/compute/postgresql.conf" contains errors
`
	got := fatalLines(log)
	want := `LOG: invalid value for parameter "shared_buffers": "lots"; FATAL: configuration file "/var/db/postgres/compute/postgresql.conf" contains errors`
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got := fatalLines("2026-11-22 03:46:18.338 GMT [1] LOG:  database system is ready\n"); got != "" {
		t.Fatalf("no FATAL line, got %q", got)
	}
}

func TestDescribeStop(t *testing.T) {
	for _, tc := range []struct {
		in   StopInfo
		want string
	}{
		{StopInfo{ServiceResult: "success"}, "postgres was stopped outside /terminate"},
		{StopInfo{ServiceResult: "exit-code", ExitCode: "exited", ExitStatus: "1"},
			"postgres failed (exit-code, exited 1; see journalctl -u compute-postgres.service)"},
		{StopInfo{ServiceResult: "timeout"}, "postgres failed (timeout; see journalctl -u compute-postgres.service)"},
	} {
		if got := describeStop(tc.in); got != tc.want {
			t.Errorf("describeStop(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStartupConcurrency(t *testing.T) {
	mk := func(settings string, conf *string) *spec.ComputeSpec {
		s := &spec.ComputeSpec{}
		if settings != "" {
			v := settings
			s.Cluster.Settings = spec.GenericOptions{{Name: "max_connections", Value: &v, Vartype: "integer"}}
		}
		s.Cluster.PostgresqlConf = conf
		return s
	}
	conf := func(s string) *string { return &s }
	for _, tc := range []struct {
		s    *spec.ComputeSpec
		want int
	}{
		{mk("", nil), 10},
		{mk("5", nil), 5},
		{mk("0", nil), 1},
		{mk("10", nil), 10},
		{mk("29", nil), 10},
		{mk("30", nil), 10},
		{mk("300", nil), 100},
		{mk("", conf("shared_buffers=1MB\nmax_connections = 90 # comment\nmax_connections=3\n")), 30},
		{mk("60", conf("max_connections=3\n")), 20},
	} {
		if got := startupConcurrency(tc.s); got != tc.want {
			t.Errorf("startupConcurrency(settings %v, conf %v) = %d, want %d", tc.s.Cluster.Settings, tc.s.Cluster.PostgresqlConf, got, tc.want)
		}
	}
}
