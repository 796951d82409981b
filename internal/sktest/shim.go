package sktest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DefaultRealPostgres is the server binary the shim hands everything else to.
const DefaultRealPostgres = "/usr/lib/postgresql/15/bin/postgres"

// Files the shim keeps next to itself.
const (
	shimLSNFile       = "SYNC_LSN"        // what --sync-safekeepers prints
	shimFailFile      = "FAIL_SYNC"       // when present: print its content and exit 1
	shimHangFile      = "HANG_SYNC"       // when present: never finish (until killed)
	shimFailTimesFile = "FAIL_SYNC_TIMES" // a count: fail (exit 1) that many more runs
	shimEnvFile       = "sync_env"        // environment seen by the last --sync-safekeepers run
	shimCallsFile     = "sync_calls"      // one line per --sync-safekeepers run
	shimName          = "postgres"        // the shim's own name
	shimTmpSuffix     = ".tmp-sktest"     // for replacing the env file atomically
)

// WriteSyncShim writes an executable shell script named `postgres` into dir and returns
// its path. Run with --sync-safekeepers it records its arguments and whether PGDATA and
// NEON_AUTH_TOKEN were set (with their values) for ShimEnv, then prints lsn on stdout and
// exits 0 — or, when SetShimFail left a FAIL_SYNC file next to it, prints that message
// and exits 1. Any other invocation execs realPostgres (DefaultRealPostgres when empty)
// with the same arguments. dir must be writable by whoever runs the shim.
func WriteSyncShim(t testing.TB, dir, lsn, realPostgres string) string {
	t.Helper()
	path, err := WriteSyncShimFile(dir, lsn, realPostgres)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteSyncShimFile is WriteSyncShim outside a test: it returns the error instead.
func WriteSyncShimFile(dir, lsn, realPostgres string) (string, error) {
	if realPostgres == "" {
		realPostgres = DefaultRealPostgres
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("sync shim: %w", err)
	}
	script := `#!/bin/sh
# postgres shim written by sktest.WriteSyncShim: fakes --sync-safekeepers.
dir=` + shellQuote(abs) + `
if [ "$1" = "--sync-safekeepers" ]; then
	{
		echo "ARGS=$*"
		if [ -n "${PGDATA+x}" ]; then echo "PGDATA=$PGDATA"; fi
		if [ -n "${NEON_AUTH_TOKEN+x}" ]; then echo "NEON_AUTH_TOKEN=$NEON_AUTH_TOKEN"; fi
	} > "$dir/` + shimEnvFile + shimTmpSuffix + `" && mv -f "$dir/` + shimEnvFile + shimTmpSuffix + `" "$dir/` + shimEnvFile + `"
	echo call >> "$dir/` + shimCallsFile + `"
	echo "sync-safekeepers shim: started" >&2
	if [ -e "$dir/` + shimHangFile + `" ]; then
		echo "sync-safekeepers shim: hanging as asked" >&2
		exec sleep 86400
	fi
	if [ -e "$dir/` + shimFailTimesFile + `" ]; then
		n=$(cat "$dir/` + shimFailTimesFile + `")
		if [ "$n" -gt 0 ]; then
			echo $((n - 1)) > "$dir/` + shimFailTimesFile + `"
			echo "transient failure ($n)"
			echo "sync-safekeepers shim: failing $n more time(s) as asked" >&2
			exit 1
		fi
	fi
	if [ -e "$dir/` + shimFailFile + `" ]; then
		cat "$dir/` + shimFailFile + `"
		echo "sync-safekeepers shim: failing as asked" >&2
		exit 1
	fi
	cat "$dir/` + shimLSNFile + `"
	exit 0
fi
exec ` + shellQuote(realPostgres) + ` "$@"
`
	path := filepath.Join(abs, shimName)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("sync shim: %w", err)
	}
	// WriteFile keeps the mode of an existing file; make sure it is executable.
	if err := os.Chmod(path, 0o755); err != nil {
		return "", fmt.Errorf("sync shim: %w", err)
	}
	if err := SetShimLSNFile(path, lsn); err != nil {
		return "", err
	}
	return path, nil
}

// SetShimLSN changes what the shim at shim prints for --sync-safekeepers.
func SetShimLSN(t testing.TB, shim, lsn string) {
	t.Helper()
	if err := SetShimLSNFile(shim, lsn); err != nil {
		t.Fatal(err)
	}
}

// SetShimLSNFile is SetShimLSN outside a test.
func SetShimLSNFile(shim, lsn string) error {
	if err := os.WriteFile(filepath.Join(filepath.Dir(shim), shimLSNFile), []byte(lsn+"\n"), 0o644); err != nil {
		return fmt.Errorf("sync shim: %w", err)
	}
	return nil
}

// SetShimFail makes the shim fail --sync-safekeepers, printing msg on stdout; an empty
// msg makes it succeed again.
func SetShimFail(t testing.TB, shim, msg string) {
	t.Helper()
	if err := SetShimFailFile(shim, msg); err != nil {
		t.Fatal(err)
	}
}

// SetShimFailFile is SetShimFail outside a test.
func SetShimFailFile(shim, msg string) error {
	p := filepath.Join(filepath.Dir(shim), shimFailFile)
	if msg == "" {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sync shim: %w", err)
		}
		return nil
	}
	if err := os.WriteFile(p, []byte(msg+"\n"), 0o644); err != nil {
		return fmt.Errorf("sync shim: %w", err)
	}
	return nil
}

// SetShimFailTimes makes the shim's next n --sync-safekeepers runs fail (exit 1, a
// transient failure) and the runs after them behave as set otherwise.
func SetShimFailTimes(t testing.TB, shim string, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(filepath.Dir(shim), shimFailTimesFile), []byte(fmt.Sprintf("%d\n", n)), 0o644); err != nil {
		t.Fatalf("sync shim: %v", err)
	}
}

// SetShimHang makes the shim's --sync-safekeepers never finish (it sleeps until killed),
// as the walproposer does while no quorum of safekeepers answers; false ends that.
func SetShimHang(t testing.TB, shim string, hang bool) {
	t.Helper()
	if err := SetShimHangFile(shim, hang); err != nil {
		t.Fatal(err)
	}
}

// SetShimHangFile is SetShimHang outside a test.
func SetShimHangFile(shim string, hang bool) error {
	p := filepath.Join(filepath.Dir(shim), shimHangFile)
	if !hang {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sync shim: %w", err)
		}
		return nil
	}
	if err := os.WriteFile(p, []byte("hang\n"), 0o644); err != nil {
		return fmt.Errorf("sync shim: %w", err)
	}
	return nil
}

// ShimEnv returns what the last --sync-safekeepers run of the shim recorded: keys ARGS and,
// when they were set, PGDATA and NEON_AUTH_TOKEN. It is nil when the shim never ran so.
func ShimEnv(t testing.TB, shim string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(shim), shimEnvFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("sync shim: %v", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// ShimSyncCalls counts the shim's --sync-safekeepers runs.
func ShimSyncCalls(t testing.TB, shim string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(shim), shimCallsFile))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatalf("sync shim: %v", err)
	}
	return strings.Count(string(b), "\n")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
