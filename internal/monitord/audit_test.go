package monitord

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/state"
)

// With compliance audit, the monitor deletes the audit files older than 15 minutes at
// once and at each tick of its own clock, and writes compute_audit_log_dir_size into the
// record of the running lifecycle.
func TestAuditSweep(t *testing.T) {
	pgData := t.TempDir()
	dir := pgdata.Dir{Path: pgData}
	if err := dir.EnsureLogDir(); err != nil {
		t.Fatal(err)
	}
	audit := &fakeClock{now: t0, tickers: make(chan *fakeTicker)}
	swept := make(chan struct{}, 10)
	file := func(name string, age time.Duration, size int) string {
		p := filepath.Join(dir.LogDirPath(), name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, t0.Add(-age), t0.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := file("audit-20260301_1140.log", 20*time.Minute, 300)
	recent := file("audit-20260301_1159.log", time.Minute, 40)
	r := newRigWith(t, func(s *Settings, d *Deps) {
		raw := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "audit_log_level": "Extended", "cluster": {"roles": [], "databases": []}}}`
		if err := os.WriteFile(paths.AppliedConfigFile(s.StateDir), []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		s.PGData = pgData
		d.AuditClock = audit
		d.afterAuditSweep = func() { swept <- struct{}{} }
	})
	r.setStatus(state.Running)
	r.started()
	var ticker *fakeTicker
	select {
	case ticker = <-audit.tickers:
	case <-time.After(5 * time.Second):
		t.Fatal("no audit clean-up started")
	}
	waitSwept := func() {
		t.Helper()
		select {
		case <-swept:
		case <-time.After(5 * time.Second):
			t.Fatal("no audit clean-up ran")
		}
	}
	size := func() uint64 {
		t.Helper()
		rec := r.load()
		if rec.AuditLogDirSize == nil {
			t.Fatal("no audit_log_dir_size in the record")
		}
		return *rec.AuditLogDirSize
	}
	waitSwept()
	if _, err := os.Stat(old); err == nil {
		t.Error("the old audit file is still there")
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("the recent audit file: %v", err)
	}
	if got := size(); got != 40 {
		t.Errorf("audit_log_dir_size = %d, want 40", got)
	}
	// 15 minutes later the other one goes too.
	ticker.c <- audit.advance(15 * time.Minute)
	waitSwept()
	if _, err := os.Stat(recent); err == nil {
		t.Error("the second audit file is still there")
	}
	if got := size(); got != 0 {
		t.Errorf("audit_log_dir_size = %d, want 0", got)
	}
}
