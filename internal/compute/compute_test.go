package compute

import (
	"strconv"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/safekeeper"
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

// The text defaults of the flags (internal/paths) are those of the packages that wait.
func TestWaitDefaultsMatchPaths(t *testing.T) {
	for _, tc := range []struct {
		text string
		want time.Duration
	}{
		{paths.DefaultPageserverIdleTimeout, pageserver.DefaultIdleTimeout},
		{paths.DefaultSyncSafekeepersTimeout, safekeeper.DefaultSyncTimeout},
		{paths.DefaultControlPlaneTimeout, controlplane.DefaultRequestTimeout},
	} {
		if d, err := time.ParseDuration(tc.text); err != nil || d != tc.want {
			t.Errorf("paths default %q, package default %s", tc.text, tc.want)
		}
	}
	if paths.DefaultBasebackupAttempts != strconv.Itoa(pageserver.DefaultAttempts) {
		t.Errorf("paths default attempts %q, pageserver %d", paths.DefaultBasebackupAttempts, pageserver.DefaultAttempts)
	}
}
