package monitord

import (
	"context"
	"errors"
	"time"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/extstats/pgcollect"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// DefaultExtStatsStartDelay delays a primary's first installed-extensions collection
// after running: it opens a session in every database, which must not compete with the
// compute's first clients (the reference collects in the background during the start).
const DefaultExtStatsStartDelay = 10 * time.Second

// publishExtStats writes a collection into the record of the lifecycle that began at
// start, and nowhere else.
func publishExtStats(store *state.Store, start time.Time) func(context.Context, extstats.Stats) error {
	return func(_ context.Context, s extstats.Stats) error {
		_, err := store.Update(func(r *state.Record) error {
			if !r.StartTime.Equal(start) {
				return errOtherLifecycle
			}
			r.InstalledExtensions = &s
			return nil
		})
		return err
	}
}

// startExtStats runs the installed-extensions collector of the lifecycle of rec until
// ctx ends (the compute leaves running); the returned function waits for it. A restarted
// monitor (or a new stretch of running in the same lifecycle) keeps the schedule from
// the record's last collection.
func (m *runner) startExtStats(ctx context.Context, rec state.Record) (wait func()) {
	log := m.log.With("component", "installed_extensions")
	collect := m.d.CollectExtensions
	if collect == nil {
		connect, err := pgcollect.PGConnector(m.s.Connstr)
		if err != nil {
			log.Warn("no installed extensions collection", "err", err)
			return func() {}
		}
		collect = func(ctx context.Context) (extstats.Stats, error) {
			return pgcollect.Collect(ctx, connect, pgcollect.Options{Log: log})
		}
	}
	delay := m.s.ExtStatsStartDelay
	if delay <= 0 {
		delay = DefaultExtStatsStartDelay
	}
	sch := &extstats.Scheduler{
		Collect: collect,
		Publish: publishExtStats(m.d.Store, rec.StartTime),
		Base: func() time.Duration {
			var suspend int64 = -1
			if l, err := m.appliedConfig(); err == nil {
				suspend = l.ComputeSpec().SuspendTimeoutSeconds
			}
			return extstats.Interval(suspend, m.s.ExtStatsInterval)
		},
		AtStart:    rec.Mode == spec.ModeTypePrimary,
		StartDelay: delay,
		Clock:      m.d.ExtStatsClock,
		Log:        log,
	}
	if rec.InstalledExtensions != nil {
		sch.Last = rec.InstalledExtensions.CollectedAt
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Run returns only when ctx ends (or without Collect, which is set).
		if err := sch.Run(ctx); !errors.Is(err, context.Canceled) {
			log.Warn("installed extensions collector stopped", "err", err)
		}
	}()
	return func() { <-done }
}
