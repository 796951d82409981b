package compute

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgtest"
)

// (lockedBuf: companions_test.go.)

func textLog() (*slog.Logger, *lockedBuf) {
	b := &lockedBuf{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// TestCoreDumpBacktrace crashes a real PostgreSQL 15 postmaster with SIGABRT and checks
// that the stop hook's core report finds the core in PGDATA and logs gdb's backtrace.
// It needs the kernel to write cores into the working directory (core_pattern without a
// directory or a pipe) and gdb.
func TestCoreDumpBacktrace(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	pattern := readCorePattern()
	if pattern == "" || strings.HasPrefix(pattern, "|") || strings.Contains(pattern, "/") {
		t.Skipf("core_pattern %q does not put cores in the working directory", pattern)
	}
	if _, err := os.Stat("/usr/bin/gdb"); err != nil {
		t.Skip("gdb is not installed")
	}
	// LimitCORE=infinity, as compute-postgres.service has it: inherited by pg_ctl and the
	// postmaster it starts.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: old.Max, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t)
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Second)
	pidLine, err := os.ReadFile(filepath.Join(pg.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidLine), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	// Wait for the postmaster to be gone and its core written.
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	log, buf := textLog()
	rep := coreReport{Dir: pg.DataDir, PGBin: filepath.Join(pg.BinDir, "postgres"), GDB: "/usr/bin/gdb",
		CorePattern: pattern, Since: since, Dumped: true, Log: log}
	cores, err := rep.find()
	if err != nil {
		t.Fatal(err)
	}
	if len(cores) == 0 {
		entries, _ := os.ReadDir(pg.DataDir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("no core file in PGDATA after SIGABRT (core_pattern %q): %v", pattern, names)
	}
	rep.run(context.Background())
	out := buf.String()
	t.Logf("log:\n%s", out)
	for _, want := range []string{"core dump found, collecting backtrace", `msg="core dump backtrace"`, "#0 "} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	// Without gdb: a clear line, and the core is left where it is.
	log, buf = textLog()
	rep.GDB, rep.Log = filepath.Join(t.TempDir(), "gdb"), log
	rep.run(context.Background())
	if !strings.Contains(buf.String(), "no backtrace: gdb is not installed") {
		t.Errorf("without gdb, log:\n%s", buf)
	}
	if _, err := os.Stat(cores[0]); err != nil {
		t.Errorf("core removed: %v", err)
	}
}

// TestCoreReportWhere covers where cores go: systemd-coredump or elsewhere (nothing to
// scan; a line when Postgres dumped core), and PGDATA (this lifecycle's cores only,
// newest first, at most maxCores).
func TestCoreReportWhere(t *testing.T) {
	dir := t.TempDir()
	since := time.Now().Add(-time.Minute)
	write := func(name string, mod time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("not a core"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	write("core.old", since.Add(-time.Hour))
	for i, n := range []string{"core", "core.1", "core.2", "core.3"} {
		write(n, since.Add(time.Duration(i+1)*time.Second))
	}
	write("corefile", since.Add(time.Hour))
	if err := os.Mkdir(filepath.Join(dir, "core.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	rep := coreReport{Dir: dir, Since: since, CorePattern: "core"}
	got, err := rep.find()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "core.3"), filepath.Join(dir, "core.2"), filepath.Join(dir, "core.1")}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("find = %q, want %q", got, want)
	}

	for _, tc := range []struct {
		pattern string
		dumped  bool
		want    string
	}{
		{"|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", true, "systemd-coredump has it and logged its backtrace; see coredumpctl info postgres"},
		{"|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", false, ""},
		{"|/usr/share/apport/apport -p%p", true, "the kernel hands cores elsewhere"},
		{"/var/crash/core.%e.%p", true, "the kernel hands cores elsewhere"},
		{"core", true, "gdb failed on the core dump"}, // the files above are no cores
	} {
		log, buf := textLog()
		r := rep
		r.CorePattern, r.Dumped, r.Log, r.GDB, r.PGBin = tc.pattern, tc.dumped, log, "/usr/bin/gdb", "/bin/true"
		if tc.pattern == "core" {
			if _, err := os.Stat(r.GDB); err != nil {
				continue
			}
		}
		r.run(context.Background())
		if tc.want == "" {
			if buf.String() != "" {
				t.Errorf("%q, dumped %v: logged %s", tc.pattern, tc.dumped, buf)
			}
		} else if !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%q, dumped %v: log lacks %q:\n%s", tc.pattern, tc.dumped, tc.want, buf)
		}
	}

	// Dumped, but no core of this lifecycle in PGDATA.
	log, buf := textLog()
	r := coreReport{Dir: t.TempDir(), CorePattern: "core", Dumped: true, Log: log}
	r.run(context.Background())
	if !strings.Contains(buf.String(), "postgres dumped core, but no core file is in PGDATA") {
		t.Errorf("log:\n%s", buf)
	}
}
