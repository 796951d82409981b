package warmup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgready"
	"github.com/computetools/compute-tools/internal/pgtest"
)

// realBin is the directory of PostgreSQL 15's binaries.
func realBin() string {
	if d := os.Getenv("PGBIN_DIR"); d != "" {
		return d
	}
	return pgtest.DefaultBinDir
}

// logs is a log sink the warm-up's goroutines may write to at once.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// setup returns options for a warm-up beside a PGDATA in a directory of the postgres
// user, with the binaries of bin, and the log it writes.
func setup(t *testing.T, bin string) (Options, *logs) {
	t.Helper()
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	l := &logs{}
	pgdataPath := filepath.Join(pgtest.OwnedDir(t, "warmup-"), "pgdata")
	return Options{PGData: pgdataPath, PGBin: filepath.Join(bin, "postgres"), OSUser: pgtest.OSUser,
		Log: slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))}, l
}

// fakeBin makes a bin directory (readable by the postgres user) with the real tools
// named in real linked in, and scripts for the others.
func fakeBin(t *testing.T, real []string, scripts map[string]string) string {
	t.Helper()
	dir := pgtest.OwnedDir(t, "warmup-bin-")
	for _, name := range real {
		if err := os.Symlink(filepath.Join(realBin(), name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// gone fails t unless the warm-up directory of o is absent.
func gone(t *testing.T, o Options) {
	t.Helper()
	if _, err := os.Lstat(pgdata.Warmup(o.PGData).Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the warm-up directory is still there: %v", err)
	}
}

// exited waits until pid has ended (gone, or a zombie left to its parent); a bound
// against a hang, not a timing assertion.
func exited(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still runs after the warm-up", pid)
		}
	}
}

// waitFile waits until path exists (bounded, as exited).
func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
	}
}

// A warm-up with the real PostgreSQL 15: a leftover directory is removed first; the
// throwaway server starts with compute_ctl's settings, a socket in its own directory and
// no TCP listener (a taken port 51055 does not matter), without the neon library
// (vanilla Postgres has none); it is stopped and the directory removed.
func TestWarmup(t *testing.T) {
	o, l := setup(t, realBin())
	dir := pgdata.Warmup(o.PGData).Path
	if err := os.MkdirAll(filepath.Join(dir, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base", "junk"), []byte("left by a crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pgconf.WarmupPort))); err == nil {
		defer ln.Close()
	} else {
		t.Logf("port %d is taken already: %v", pgconf.WarmupPort, err)
	}
	var pid int
	o.afterReady = func(context.Context) {
		pf, err := pgready.ReadPidFile(dir)
		if err != nil {
			t.Errorf("postmaster.pid: %v", err)
			return
		}
		pid = pf.PID
		if pf.Port != pgconf.WarmupPort || pf.SocketDir != dir || pf.Status != pgready.StatusReady {
			t.Errorf("postmaster.pid says port %d, socket directory %q, status %q", pf.Port, pf.SocketDir, pf.Status)
		}
		conf, err := os.ReadFile(filepath.Join(dir, pgdata.ConfFile))
		if err != nil || string(conf) != pgconf.Warmup(pgconf.WarmupOptions{SocketDir: dir}) {
			t.Errorf("postgresql.conf:\n%s (%v)", conf, err)
		}
	}
	res := Run(context.Background(), o)
	if res.Outcome != Warmed || res.Err != nil || res.Neon || !res.LeftoverRemoved {
		t.Fatalf("result %+v\n%s", res, l)
	}
	if pid == 0 {
		t.Fatalf("the throwaway postgres was never seen ready\n%s", l)
	}
	exited(t, pid)
	gone(t, o)
	for _, want := range []string{"removed a warm-up directory an earlier run left behind", "warming up the VM", "warm-up done"} {
		if !strings.Contains(l.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}

// abortAt runs a warm-up with the binaries of bin and aborts it once a process of it
// has written its pid into pidFile; the warm-up must end aborted, that process must be
// gone and the directory removed.
func abortAt(t *testing.T, bin, pidFile string) {
	t.Helper()
	o, l := setup(t, bin)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() { done <- Run(ctx, o) }()
	waitFile(t, pidFile)
	cancel()
	if res := <-done; res.Outcome != Aborted {
		t.Fatalf("result %+v\n%s", res, l)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid %q: %v", b, err)
	}
	exited(t, pid)
	gone(t, o)
}

// Ending the context aborts the warm-up wherever it is, and Run returns once its
// processes are gone and the directory is removed.
func TestWarmupAbort(t *testing.T) {
	t.Run("while postgres runs", func(t *testing.T) {
		o, l := setup(t, realBin())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var pid int
		o.afterReady = func(ctx context.Context) {
			pf, _ := pgready.ReadPidFile(pgdata.Warmup(o.PGData).Path)
			pid = pf.PID
			cancel()
			<-ctx.Done()
		}
		if res := Run(ctx, o); res.Outcome != Aborted {
			t.Fatalf("result %+v\n%s", res, l)
		}
		if pid == 0 {
			t.Fatal("no postmaster seen")
		}
		exited(t, pid)
		gone(t, o)
	})
	t.Run("while postgres starts", func(t *testing.T) {
		// A postgres that never gets ready: the abort ends it (SIGQUIT).
		marker := filepath.Join(pgtest.OwnedDir(t, "warmup-mark-"), "started")
		bin := fakeBin(t, []string{"initdb"}, map[string]string{
			"postgres": "trap 'kill $!; exit 3' QUIT; echo $$ >" + marker + "; sleep 600 & wait"})
		abortAt(t, bin, marker)
	})
	t.Run("during initdb", func(t *testing.T) {
		// initdb's children go too (its own process group): nothing writes into the
		// directory once it is removed.
		mark := pgtest.OwnedDir(t, "warmup-mark-")
		bin := fakeBin(t, nil, map[string]string{"initdb": `mkdir -p "$2" && touch "$2/partial" || exit 1; ` +
			"sleep 600 & echo $! >" + filepath.Join(mark, "child") + "; wait"})
		abortAt(t, bin, filepath.Join(mark, "child"))
	})
	t.Run("before it began", func(t *testing.T) {
		o, l := setup(t, realBin())
		if err := os.Mkdir(pgdata.Warmup(o.PGData).Path, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if res := Run(ctx, o); res.Outcome != Aborted || !res.LeftoverRemoved {
			t.Fatalf("result %+v\n%s", res, l)
		}
		if strings.Contains(l.String(), "warming up the VM") {
			t.Errorf("a warm-up began after the abort:\n%s", l)
		}
		gone(t, o)
	})
}

// What can go wrong is a warning, never an error for the caller, and the directory is
// removed.
func TestWarmupFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		real    []string
		scripts map[string]string
		// neonLib: pg_config says libraries are in a directory with a neon.so that is
		// no library.
		neonLib bool
		want    string
	}{
		{name: "no initdb", real: []string{"postgres"}, want: "initdb"},
		{name: "initdb fails", real: []string{"postgres"},
			scripts: map[string]string{"initdb": `mkdir -p "$2" && touch "$2/partial"; echo "initdb: the disk is on fire" >&2; exit 1`},
			want:    "the disk is on fire"},
		{name: "postgres does not start", real: []string{"initdb"},
			scripts: map[string]string{"postgres": `echo "FATAL:  could not create shared memory segment" >&2; exit 1`},
			want:    "postgres exited before it was ready"},
		{name: "neon library that does not load", real: []string{"initdb", "postgres"}, neonLib: true,
			want: "neon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scripts := tc.scripts
			if tc.neonLib {
				lib := pgtest.OwnedDir(t, "warmup-lib-")
				if err := os.WriteFile(filepath.Join(lib, "neon.so"), []byte("not a library"), 0o644); err != nil {
					t.Fatal(err)
				}
				scripts = map[string]string{"pg_config": "echo " + lib}
			}
			o, l := setup(t, fakeBin(t, tc.real, scripts))
			res := Run(context.Background(), o)
			if res.Outcome != Failed || res.Err == nil || !strings.Contains(res.Err.Error(), tc.want) {
				t.Fatalf("result %+v, want a failure naming %q\n%s", res, tc.want, l)
			}
			if res.Neon != tc.neonLib {
				t.Errorf("neon library found: %v, want %v", res.Neon, tc.neonLib)
			}
			if !strings.Contains(l.String(), "level=WARN msg=\"warm-up failed: the compute goes on without it\"") {
				t.Errorf("no warning logged:\n%s", l)
			}
			gone(t, o)
		})
	}
}
