package extstats

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// DefaultTimeout bounds one collection of a Scheduler.
const DefaultTimeout = 10 * time.Minute

// Timer is a running timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// Clock is the time source of a Scheduler; tests drive a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer implements Clock.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (s sysTimer) C() <-chan time.Time { return s.t.C }
func (s sysTimer) Stop() bool          { return s.t.Stop() }

// Scheduler runs collections on the reference's schedule (see the package doc): at once
// when AtStart, then in a loop that waits I, collects and sets I = max(I, 2 x Base()),
// starting from I = 2 x Base(). Collections never overlap; a failed one is logged and the
// loop goes on. Each successful collection is logged (LogMessage) and handed to Publish.
type Scheduler struct {
	// Collect runs one collection (pgcollect.Collect in production); required.
	Collect func(ctx context.Context) (Stats, error)
	// Publish receives each successful collection (its CollectedAt on Clock), for the
	// state record; nil: the collections are only logged. An error is logged; the
	// collection is not retried before its time.
	Publish func(ctx context.Context, s Stats) error
	// Base is the current base interval, the reference's atomic value: Interval of the
	// applied spec's suspend_timeout_seconds. It is read when Run starts and after each
	// collection. nil, or a result <= 0: DefaultInterval.
	Base func() time.Duration
	// AtStart collects at once (the reference does on a primary's start). Ignored when
	// Last is set.
	AtStart bool
	// StartDelay delays the AtStart collection (compute-monitor: so that it does not
	// compete with the compute's first clients the moment it is running).
	StartDelay time.Duration
	// Last is when the previous collection of this compute's life ended (a restarted
	// monitor reads it from the state record); when set, the first collection is due
	// 2 x Base() after it (at once if that is past).
	Last time.Time
	// Timeout bounds one collection; <= 0: DefaultTimeout.
	Timeout time.Duration
	// Clock; nil: SystemClock.
	Clock Clock
	// Log; nil: slog.Default().
	Log *slog.Logger
}

// Run collects until ctx ends and returns ctx's error. A collection cut short by ctx is
// neither logged as failed nor published.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Collect == nil {
		return errors.New("installed extensions scheduler: Collect is required")
	}
	if s.Clock == nil {
		s.Clock = SystemClock{}
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	interval := 2 * s.base()
	wait := interval
	switch {
	case !s.Last.IsZero():
		wait = max(0, s.Last.Add(interval).Sub(s.Clock.Now()))
	case s.AtStart:
		wait = max(0, s.StartDelay)
	}
	s.Log.Info("installed extensions collector started", "interval_ms", interval.Milliseconds(), "first_in_ms", wait.Milliseconds())
	for {
		if err := s.sleep(ctx, wait); err != nil {
			return err
		}
		s.collect(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		interval = max(interval, 2*s.base())
		wait = interval
		s.Log.Debug("next installed extensions collection", "in_ms", wait.Milliseconds())
	}
}

func (s *Scheduler) base() time.Duration {
	if s.Base == nil {
		return DefaultInterval
	}
	if b := s.Base(); b > 0 {
		return min(b, maxBase)
	}
	return DefaultInterval
}

func (s *Scheduler) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := s.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

func (s *Scheduler) collect(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	start := s.Clock.Now()
	st, err := s.Collect(cctx)
	if ctx.Err() != nil {
		return // shutting down: not an outcome
	}
	end := s.Clock.Now()
	took := end.Sub(start).Milliseconds()
	if err != nil {
		s.Log.Warn("could not get installed extensions", "err", err, "collect_ms", took)
		return
	}
	st.CollectedAt = end
	if st.Extensions == nil {
		st.Extensions = []Extension{}
	}
	s.Log.Info(LogMessage(st), "databases", st.Databases, "skipped_databases", st.SkippedDatabases, "collect_ms", took)
	if s.Publish == nil {
		return
	}
	if err := s.Publish(ctx, st); err != nil && ctx.Err() == nil {
		s.Log.Warn("could not publish installed extensions", "err", err)
	}
}
