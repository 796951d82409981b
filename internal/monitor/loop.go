package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/clock"
	"github.com/computetools/compute-tools/internal/pg"
)

// Defaults of Loop.
const (
	// DefaultInterval is the time between two rounds, as the reference's
	// MONITOR_CHECK_INTERVAL.
	DefaultInterval = 500 * time.Millisecond
	// DefaultRoundTimeout bounds one round (connect and queries): a Postgres that hangs
	// makes rounds fail, and counts as downtime, rather than hang the monitor.
	DefaultRoundTimeout = 5 * time.Second
	// AppName is the application_name of the monitor's connection, as the reference's.
	AppName = "compute_ctl:compute_monitor"
)

// Ticker is a running ticker of a Clock.
type Ticker = clock.Ticker

// Clock is the time source of a Loop; tests drive a fake one.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// SystemClock is the real clock.
type SystemClock = clock.System

// Conn is one connection to Postgres as the loop uses it.
type Conn interface {
	Source
	Close(ctx context.Context) error
}

// Connector opens a connection.
type Connector func(ctx context.Context) (Conn, error)

// PGConnector connects to connstr with internal/pg (Neon's startup options) and
// application_name AppName; adminRole is the role whose sessions are not activity.
func PGConnector(connstr, adminRole string) Connector {
	return func(ctx context.Context) (Conn, error) {
		c, err := pg.Connect(ctx, connstr, AppName)
		if err != nil {
			return nil, err
		}
		return pgConn{PGSource{Conn: c, AdminRole: adminRole}, c}, nil
	}
}

type pgConn struct {
	PGSource
	c *pgx.Conn
}

func (p pgConn) Close(ctx context.Context) error { return p.c.Close(ctx) }

// Loop runs a round every Interval: (re)connect if it has no connection, take a sample,
// record the outcome in Downtime and Tracker, and call OnRound. A failed round drops the
// connection, so the next one reconnects. Rounds never overlap: the ticks that come while
// a round runs are coalesced into one, so the round after a long one starts at once. That
// is a fixed rate, where the reference sleeps a fixed delay after each round; with rounds
// far shorter than the interval the two are the same.
type Loop struct {
	Connect Connector // required
	Sampler *Sampler  // required; its Now is set to Clock.Now when nil
	// Tracker, when set, observes every successful sample's LastActive.
	Tracker *Tracker
	// Downtime, when set, records every round; nil: NewDowntime at Run's start.
	Downtime *Downtime
	// Interval between rounds; <= 0 means DefaultInterval.
	Interval time.Duration
	// RoundTimeout bounds a round; <= 0 means DefaultRoundTimeout.
	RoundTimeout time.Duration
	// Clock; nil means SystemClock.
	Clock Clock
	// OnRound is called after each round, in the loop's goroutine, with whether it
	// succeeded and its sample (zero when it failed): a unit sends WATCHDOG=1 only when ok.
	// Tracker has observed the sample by then, so a publisher can ask Tracker.Due here.
	OnRound func(ok bool, s Sample)
	// Log; nil means slog.Default().
	Log *slog.Logger

	conn Conn
	down bool // the previous round failed (for logging transitions only)
}

// Run runs rounds until ctx ends, the first one at once; it closes its connection and
// returns ctx's error. A round cut short by ctx is not counted as downtime.
func (l *Loop) Run(ctx context.Context) error {
	if l.Connect == nil || l.Sampler == nil {
		return errors.New("monitor loop: Connect and Sampler are required")
	}
	if l.Clock == nil {
		l.Clock = SystemClock{}
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
	if l.Interval <= 0 {
		l.Interval = DefaultInterval
	}
	if l.RoundTimeout <= 0 {
		l.RoundTimeout = DefaultRoundTimeout
	}
	if l.Sampler.Now == nil {
		l.Sampler.Now = l.Clock.Now
	}
	if l.Downtime == nil {
		l.Downtime = NewDowntime(l.Clock.Now())
	}
	// A resumed outage is down from the first round on: its recovery is logged.
	l.down = l.Downtime.Down()
	defer l.closeConn()
	tick := l.Clock.NewTicker(l.Interval)
	defer tick.Stop()
	l.Log.Info("activity monitor started", "interval_ms", l.Interval.Milliseconds(), "stats_delta", l.Sampler.StatsDelta)
	for {
		l.round(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C():
		}
	}
}

func (l *Loop) round(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, l.RoundTimeout)
	defer cancel()
	s, err := l.sample(rctx)
	if ctx.Err() != nil {
		return // shutting down: not an outcome
	}
	now := l.Clock.Now()
	ok := err == nil
	outage := l.Downtime.Round(ok, now)
	if ok {
		if l.down {
			l.Log.Info("postgres reachable again", "downtime_ms", outage.Milliseconds())
		}
		if l.Tracker != nil && l.Tracker.Observe(s.LastActive) {
			l.Log.Debug("last activity moved", "last_active", s.LastActive, "reason", string(s.Reason))
		}
	} else {
		l.closeConn()
		if !l.down {
			l.Log.Warn("activity check failed; reconnecting at the next round", "err", err)
		} else {
			l.Log.Debug("activity check failed", "err", err, "current_downtime_ms", l.Downtime.CurrentMs())
		}
		s = Sample{}
	}
	l.down = !ok
	if l.OnRound != nil {
		l.OnRound(ok, s)
	}
}

func (l *Loop) sample(ctx context.Context) (Sample, error) {
	if l.conn == nil {
		c, err := l.Connect(ctx)
		if err != nil {
			return Sample{}, err
		}
		l.conn = c
	}
	s, err := l.Sampler.Sample(ctx, l.conn)
	if err != nil {
		return Sample{}, fmt.Errorf("sample: %w", err)
	}
	return s, nil
}

func (l *Loop) closeConn() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.conn.Close(ctx)
	l.conn = nil
}
