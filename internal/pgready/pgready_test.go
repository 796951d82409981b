package pgready

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgtest"
)

// pidFile renders a postmaster.pid as PG 15 writes it, cut after the first n lines.
func pidFile(pid int, start time.Time, status string, n int) string {
	lines := []string{
		strconv.Itoa(pid), "/var/db/postgres/compute", strconv.FormatInt(start.Unix(), 10), "55432",
		"/run/compute-postgres", "*", "  5432001    851970", fmt.Sprintf("%-8s", status),
	}
	out := ""
	for _, l := range lines[:n] {
		out += l + "\n"
	}
	return out
}

func TestParsePidFile(t *testing.T) {
	start := time.Unix(1763790000, 0)
	p, err := ParsePidFile(pidFile(4242, start, "ready", 8))
	if err != nil {
		t.Fatal(err)
	}
	want := PidFile{PID: 4242, DataDir: "/var/db/postgres/compute", StartTime: start, Port: 55432,
		SocketDir: "/run/compute-postgres", Status: "ready"}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	if !p.Ready(start) || !p.Ready(start.Add(900*time.Millisecond)) {
		t.Error("a ready postmaster started in the same second is not ready")
	}
	if p.Ready(start.Add(time.Second)) {
		t.Error("a postmaster started before `since` (a stale file) counts as ready")
	}

	// Written line by line while the postmaster starts: not ready, not an error.
	for n := 1; n < 8; n++ {
		p, err := ParsePidFile(pidFile(4242, start, "ready", n))
		if err != nil {
			t.Errorf("%d lines: %v", n, err)
		}
		if p.Ready(time.Time{}) {
			t.Errorf("%d lines: ready", n)
		}
	}
	for _, s := range []string{"starting", "stopping", "standby"} {
		if p, _ := ParsePidFile(pidFile(4242, start, s, 8)); p.Ready(time.Time{}) {
			t.Errorf("status %q counts as ready", s)
		}
	}
	// A single-user backend writes its negative PID.
	if p, _ := ParsePidFile(pidFile(-4242, start, "ready", 8)); p.Ready(time.Time{}) {
		t.Error("a single-user backend counts as ready")
	}
	for _, bad := range []string{"", "\n", "abc\n", "12\n/d\nnot-a-time\n", "12\n/d\n1\nport\n"} {
		if _, err := ParsePidFile(bad); !errors.Is(err, ErrPartial) {
			t.Errorf("ParsePidFile(%q) = %v, want ErrPartial", bad, err)
		}
	}
}

// deadPID is a PID that no process has (searched down from a high number).
func deadPID(t *testing.T) int {
	t.Helper()
	for pid := 4_000_000; pid > 1000; pid -= 997 {
		if !alive(pid) {
			return pid
		}
	}
	t.Skip("no unused PID found")
	return 0
}

func write(t *testing.T, dir, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, PidFileName), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitAsync runs Wait in the background.
func waitAsync(ctx context.Context, dir string, o Options) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := Wait(ctx, dir, o)
		done <- err
	}()
	return done
}

func TestWaitFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	since := time.Now()
	// A file left behind by a crash of an earlier run says ready: it must not count.
	write(t, dir, pidFile(11, since.Add(-time.Hour), "ready", 8))
	// A long poll interval: only inotify can wake the wait in time.
	done := waitAsync(context.Background(), dir, Options{Since: since, Poll: time.Hour})
	for _, body := range []string{
		pidFile(12, since, "", 1),
		pidFile(12, since, "starting", 8),
		pidFile(12, since, "standby", 8),
	} {
		write(t, dir, body)
		select {
		case err := <-done:
			t.Fatalf("Wait returned (%v) before the postmaster was ready; file:\n%s", err, body)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Ready and of this lifecycle, but the process is gone (a crash in the same second).
	write(t, dir, pidFile(deadPID(t), since, "ready", 8))
	select {
	case err := <-done:
		t.Fatalf("Wait returned (%v) for a postmaster that does not exist", err)
	case <-time.After(50 * time.Millisecond):
	}
	write(t, dir, pidFile(os.Getpid(), since, "ready", 8))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not see the ready postmaster")
	}
}

func TestWaitEnds(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("the compute failed")
	wake := make(chan struct{}, 1)
	var failed atomic.Bool
	done := waitAsync(context.Background(), dir, Options{Wake: wake, Poll: time.Hour, Check: func() error {
		if failed.Load() {
			return boom
		}
		return nil
	}})
	failed.Store(true)
	wake <- struct{}{}
	if err := <-done; !errors.Is(err, boom) {
		t.Errorf("Wait = %v, want the check's error", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done = waitAsync(ctx, dir, Options{Poll: time.Hour})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after cancel = %v", err)
	}

	// Unreadable as a directory: a real error, reported at once.
	file := filepath.Join(dir, "plain")
	write(t, dir, "")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Wait(context.Background(), file, Options{Poll: time.Hour}); err == nil {
		t.Error("Wait on a file instead of a directory succeeded")
	}
}

// A real PostgreSQL 15 started with pg_ctl: its postmaster.pid reads as ready.
func TestRealPostmaster(t *testing.T) {
	before := time.Now()
	inst := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Wait(ctx, inst.DataDir, Options{Since: before})
	if err != nil {
		t.Fatal(err)
	}
	if p.Port != inst.Port || p.SocketDir != inst.SocketDir || p.DataDir != inst.DataDir {
		t.Errorf("pid file %+v, instance port %d socket %s data %s", p, inst.Port, inst.SocketDir, inst.DataDir)
	}
}
