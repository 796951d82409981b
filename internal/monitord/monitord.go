// Package monitord runs compute-monitor (compute-monitor.service): it waits, cheaply, for
// the compute to be running (the state record, woken by the D-Bus StatusChanged signal),
// then runs internal/monitor's round loop against the local Postgres until the compute
// leaves running; it publishes last_active and the downtime figures into the state
// record (coalesced: at most once a second) and pings the systemd watchdog after each
// successful round only. It never moves the status (it writes through state.Store.Update).
package monitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/monitor"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Settings are compute-monitor's host settings, as given on the command line.
type Settings struct {
	// StateDir holds the state record and the applied config.
	StateDir string
	// Connstr is how to connect as the admin role (whose sessions are not activity).
	Connstr string
	// Interval is the round interval (0: monitor.DefaultInterval).
	Interval time.Duration
	// PublishInterval bounds the rate of the state record writes (0:
	// monitor.DefaultPublishInterval).
	PublishInterval time.Duration
	// Recheck is the safety re-read of the state record while waiting, against a lost
	// D-Bus signal (0: 5 s).
	Recheck time.Duration
	// Watchdog is systemd's watchdog interval (WatchdogSec=); 0: no watchdog asked for.
	Watchdog time.Duration
}

// Notifier is what the monitor tells systemd (sd_notify); internal/sysd in production.
type Notifier interface {
	Ready(status string) error
	Status(status string) error
	Watchdog() error
}

// Deps are the monitor's collaborators.
type Deps struct {
	Store *state.Store // required
	// Subscribe returns the wake-ups of the D-Bus status signal (a hint: the record is
	// re-read); nil: the monitor re-reads every Recheck.
	Subscribe func() (<-chan struct{}, func())
	// Connect opens a monitoring connection; nil: monitor.PGConnector with Connstr and
	// the admin role named in it.
	Connect  monitor.Connector
	Notifier Notifier      // nil: nothing is told
	Clock    monitor.Clock // nil: the system clock
	Log      *slog.Logger  // nil: slog.Default()

	afterRound func() // tests: called after each round is published
}

// errStale refuses a write into a record that is no longer the one being monitored.
var errStale = errors.New("the compute left running or began a new lifecycle")

// monitored says whether the monitor runs for r: the compute is running (or being
// reconfigured, Postgres still serving) within the lifecycle that began at start.
func monitored(r state.Record, start time.Time) bool {
	if !r.StartTime.Equal(start) {
		return false
	}
	switch r.Status {
	case state.Running, state.ConfigurationPending, state.Configuration:
		return true
	}
	return false
}

// Run waits for running, monitors until the compute leaves it, and waits again, until ctx
// ends (then it returns nil).
func Run(ctx context.Context, s Settings, d Deps) error {
	if d.Store == nil {
		return errors.New("monitord: a state store is required")
	}
	m := &runner{s: s, d: d, log: d.Log}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.d.Clock == nil {
		m.d.Clock = monitor.SystemClock{}
	}
	if m.d.Notifier == nil {
		m.d.Notifier = nopNotifier{}
	}
	if m.s.Recheck <= 0 {
		m.s.Recheck = 5 * time.Second
	}
	if m.d.Connect == nil {
		cfg, err := pg.Config(s.Connstr, monitor.AppName)
		if err != nil {
			return fmt.Errorf("--connstr: %w", err)
		}
		m.d.Connect = monitor.PGConnector(s.Connstr, cfg.User)
	}
	for {
		rec, err := m.waitRunning(ctx)
		if ctx.Err() != nil {
			m.log.Info("activity monitor stopped")
			return nil
		}
		if err != nil {
			return fmt.Errorf("wait for running: %w", err)
		}
		m.monitor(ctx, rec)
		if ctx.Err() != nil {
			m.log.Info("activity monitor stopped")
			return nil
		}
	}
}

const (
	statusWaiting    = "waiting for the compute to be running"
	statusMonitoring = "monitoring activity"
	statusDown       = "postgres unreachable"
)

type runner struct {
	s     Settings
	d     Deps
	log   *slog.Logger
	ready bool // READY=1 was sent
}

func (m *runner) notify(err error) {
	if err != nil {
		m.log.Debug("sd_notify", "err", err)
	}
}

func (m *runner) subscribe() (<-chan struct{}, func()) {
	if m.d.Subscribe == nil {
		return nil, func() {}
	}
	return m.d.Subscribe()
}

// waitRunning waits for a running compute. While it waits, the process is healthy: it
// keeps the watchdog fed (there is no round to wait for).
func (m *runner) waitRunning(ctx context.Context) (state.Record, error) {
	wake, cancel := m.subscribe()
	defer cancel()
	stop := m.feedWatchdog(ctx)
	defer stop()
	// Ready once the wait is set up: readiness never waits for Postgres or for running.
	if !m.ready {
		m.ready = true
		m.notify(m.d.Notifier.Ready(statusWaiting))
	} else {
		m.notify(m.d.Notifier.Status(statusWaiting))
	}
	return m.d.Store.Wait(ctx, wake, m.s.Recheck, func(r state.Record) bool { return r.Status == state.Running })
}

// feedWatchdog sends WATCHDOG=1 at half the watchdog interval until stop is called.
func (m *runner) feedWatchdog(ctx context.Context) (stop func()) {
	if m.s.Watchdog <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(m.s.Watchdog / 2)
		defer t.Stop()
		for {
			m.notify(m.d.Notifier.Watchdog())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// features reads the spec features of the applied config; without one (or with one that
// does not load) the stats-delta rule is off.
func (m *runner) features() []string {
	p := paths.AppliedConfigFile(m.s.StateDir)
	raw, err := os.ReadFile(p)
	if err != nil {
		m.log.Warn("no applied config: the stats-delta rule is off", "path", p, "err", err)
		return nil
	}
	l, err := spec.Load(raw)
	if err != nil {
		m.log.Warn("applied config does not load: the stats-delta rule is off", "path", p, "err", err)
		return nil
	}
	return l.ComputeSpec().Features
}

// monitor runs the round loop for the lifecycle of rec until the compute leaves running
// (or ctx ends).
func (m *runner) monitor(ctx context.Context, rec state.Record) {
	start := rec.StartTime
	now := m.d.Clock.Now()
	var seed time.Time
	if rec.LastActive != nil {
		seed = *rec.LastActive
	}
	p := &publisher{
		store: m.d.Store, log: m.log, start: start, notifier: m.d.Notifier,
		tracker:  monitor.NewTracker(seed, m.s.PublishInterval),
		downtime: monitor.ResumeDowntime(now, time.Duration(rec.PGCurrentDowntimeMs)*time.Millisecond),
		interval: m.s.PublishInterval, watchdog: m.s.Watchdog > 0,
		pubCurrent: rec.PGCurrentDowntimeMs,
	}
	if p.interval <= 0 {
		p.interval = monitor.DefaultPublishInterval
	}
	loop := &monitor.Loop{
		Connect:  m.d.Connect,
		Sampler:  &monitor.Sampler{StatsDelta: monitor.StatsDeltaEnabled(m.features())},
		Tracker:  p.tracker,
		Downtime: p.downtime,
		Interval: m.s.Interval,
		Clock:    m.d.Clock,
		OnRound: func(ok bool, _ monitor.Sample) {
			p.round(ok, m.d.Clock.Now())
			if m.d.afterRound != nil {
				m.d.afterRound()
			}
		},
		Log: m.log,
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watcher ends the loop when the compute leaves running.
	wake, unsub := m.subscribe()
	defer unsub()
	watched := make(chan state.Record, 1)
	go func() {
		r, err := m.d.Store.Wait(lctx, wake, m.s.Recheck, func(r state.Record) bool { return !monitored(r, start) })
		if err == nil {
			watched <- r
		}
		cancel()
	}()
	m.notify(m.d.Notifier.Status(statusMonitoring))
	_ = loop.Run(lctx)
	cancel()
	select {
	case r := <-watched:
		m.log.Info("compute left running: activity monitor waits", "status", string(r.Status))
	default:
	}
	p.flush(m.d.Clock.Now())
}

// publisher writes what the rounds learn into the state record, coalesced.
type publisher struct {
	store    *state.Store
	log      *slog.Logger
	notifier Notifier
	start    time.Time
	tracker  *monitor.Tracker
	downtime *monitor.Downtime
	interval time.Duration
	watchdog bool

	pubCurrent  uint64    // the current downtime last written
	pubTotal    uint64    // the loop's total downtime last added to the record's counter
	downWritten time.Time // when the downtime figures were last written
	down        bool      // the last round failed
	stale       bool      // the record is not ours anymore: write nothing
}

// round follows every round of the loop (now is the loop's clock).
func (p *publisher) round(ok bool, now time.Time) {
	if ok {
		if p.watchdog {
			if err := p.notifier.Watchdog(); err != nil {
				p.log.Debug("sd_notify", "err", err)
			}
		}
		if p.down {
			_ = p.notifier.Status(statusMonitoring)
		}
	} else if !p.down {
		_ = p.notifier.Status(statusDown)
	}
	p.down = !ok
	p.publish(now, false)
}

// flush writes what is pending, whatever the rate.
func (p *publisher) flush(now time.Time) { p.publish(now, true) }

func (p *publisher) publish(now time.Time, force bool) {
	if p.stale {
		return
	}
	la, laDue := p.tracker.Due(now)
	if force {
		la, laDue = p.tracker.Pending()
	}
	cur, total := uint64(p.downtime.CurrentMs()), uint64(p.downtime.TotalMs())
	dtChanged := cur != p.pubCurrent || total != p.pubTotal
	recovered := cur == 0 && p.pubCurrent != 0
	dtDue := dtChanged && (force || recovered || p.downWritten.IsZero() || now.Sub(p.downWritten) >= p.interval)
	if !laDue && !dtDue {
		return
	}
	_, err := p.store.Update(func(r *state.Record) error {
		if !monitored(*r, p.start) {
			return errStale
		}
		if laDue && (r.LastActive == nil || la.After(*r.LastActive)) {
			v := la.UTC()
			r.LastActive = &v
		}
		if dtDue {
			r.PGCurrentDowntimeMs = cur
			r.Counters.PGDowntimeMsTotal += total - p.pubTotal
		}
		return nil
	})
	if errors.Is(err, errStale) {
		p.stale = true
		return
	}
	if err != nil {
		p.log.Warn("could not publish the activity into the state record", "err", err)
		return // due again at the next round
	}
	if laDue {
		p.tracker.Published(la, now)
	}
	if dtDue {
		p.pubCurrent, p.pubTotal, p.downWritten = cur, total, now
	}
}

type nopNotifier struct{}

func (nopNotifier) Ready(string) error  { return nil }
func (nopNotifier) Status(string) error { return nil }
func (nopNotifier) Watchdog() error     { return nil }
