package monitord

import (
	"context"
	"time"

	"github.com/computetools/compute-tools/internal/monitor"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// DefaultAuditSweepInterval is how often the old audit files are deleted and
// compute_audit_log_dir_size measured (compute_ctl's pgaudit GC: every 60 s).
const DefaultAuditSweepInterval = 60 * time.Second

// startAuditSweep runs, while the compute of rec runs with compliance audit (the applied
// config's audit_log_level), compute_ctl's pgaudit clean-up: at once and then every
// Settings.AuditSweepInterval, the audit files of PGDATA/log not modified for 15 minutes
// are deleted and the size of the log files left is written into this lifecycle's record
// (compute_audit_log_dir_size). The returned function waits for it once ctx ends.
func (m *runner) startAuditSweep(ctx context.Context, rec state.Record, applied *spec.Loaded) (wait func()) {
	if applied == nil || !applied.ComputeSpec().AuditLogLevel.Compliance() {
		return func() {}
	}
	log := m.log.With("component", "audit_log_cleanup")
	if m.s.PGData == "" {
		log.Warn("no audit log clean-up: PGDATA is not set")
		return func() {}
	}
	clk := m.d.AuditClock
	if clk == nil {
		clk = monitor.SystemClock{}
	}
	every := m.s.AuditSweepInterval
	if every <= 0 {
		every = DefaultAuditSweepInterval
	}
	dir := pgdata.Dir{Path: m.s.PGData}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := clk.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			removed, size, err := dir.SweepAuditLogs(clk.Now(), pgdata.AuditLogMaxAge)
			switch {
			case err != nil && !failing:
				failing = true
				log.Warn("audit log clean-up failed; trying again every interval", "dir", dir.LogDirPath(), "err", err)
			case err == nil && failing:
				failing = false
				log.Info("audit log clean-up works again", "dir", dir.LogDirPath())
			}
			if removed > 0 {
				log.Info("old audit log files deleted", "count", removed, "dir", dir.LogDirPath())
			}
			if _, err := m.d.Store.Update(func(r *state.Record) error {
				if !r.StartTime.Equal(rec.StartTime) {
					return errOtherLifecycle
				}
				v := uint64(size)
				r.AuditLogDirSize = &v
				return nil
			}); err != nil {
				log.Debug("compute_audit_log_dir_size not written", "err", err)
			}
			if m.d.afterAuditSweep != nil {
				m.d.afterAuditSweep()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C():
			}
		}
	}()
	return func() { <-done }
}
