package apiserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgbouncer/pgbouncertest"
)

// unitStates answers ActiveState from a map and records stops.
type unitStates struct {
	active map[string]string
	stops  []string
	err    error
}

func (u *unitStates) ActiveState(_ context.Context, name string) (string, error) {
	if u.err != nil {
		return "", u.err
	}
	if st, ok := u.active[name]; ok {
		return st, nil
	}
	return "inactive", nil
}

func (u *unitStates) StopUnit(_ context.Context, name string) error {
	u.stops = append(u.stops, name)
	return nil
}

// TestCompanionsKillPgbouncerByPidFile: a pgbouncer that is no unit is killed through its
// pid file, as compute_ctl does; a pid file naming another process kills nothing.
func TestCompanionsKillPgbouncerByPidFile(t *testing.T) {
	pb := pgbouncertest.Start(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pgbouncer.pid")
	var logs bytes.Buffer
	c := newCompanions(&unitStates{}, pidFile, filepath.Join(dir, "lp.pid"), slog.New(slog.NewTextHandler(&logs, nil)))

	// Not this process (a test binary, not pgbouncer).
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.StopCompanions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "not a running pgbouncer") || !pb.Alive() {
		t.Fatalf("log %s", logs.String())
	}

	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pb.PID())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.StopCompanions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pb.Alive() {
		t.Fatal("pgbouncer still answers after StopCompanions")
	}
	if !strings.Contains(logs.String(), "pgbouncer killed") {
		t.Errorf("log %s", logs.String())
	}
	// Garbage in the pid file is a clear error.
	if err := os.WriteFile(pidFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.StopCompanions(context.Background()); err == nil || !strings.Contains(err.Error(), "is not a pid") {
		t.Errorf("StopCompanions with garbage = %v", err)
	}
}

// TestCompanionsUnits: active units are stopped through systemd and nothing is signalled.
func TestCompanionsUnits(t *testing.T) {
	u := &unitStates{active: map[string]string{paths.UnitPgbouncer: "active", paths.UnitLocalProxy: "active"}}
	c := newCompanions(u, "/nonexistent/pgbouncer.pid", "/nonexistent/pid", slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	c.kill = func(int, syscall.Signal) error { t.Error("a process was signalled"); return nil }
	if err := c.StopCompanions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(u.stops, ","); got != paths.UnitPgbouncer+","+paths.UnitLocalProxy {
		t.Errorf("stopped %s", got)
	}
	// Nothing runs at all: no error.
	u = &unitStates{}
	c.units = u
	if err := c.StopCompanions(context.Background()); err != nil || len(u.stops) != 0 {
		t.Errorf("StopCompanions with nothing running = %v, stops %v", err, u.stops)
	}
	// systemd unreachable: the error says which.
	c.units = &unitStates{err: errors.New("bus gone")}
	if err := c.StopCompanions(context.Background()); err == nil || !strings.Contains(err.Error(), "pgbouncer: bus gone") {
		t.Errorf("StopCompanions without systemd = %v", err)
	}
}
