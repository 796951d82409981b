// Package monitord runs compute-monitor (compute-monitor.service): it waits, cheaply, for
// the compute to be running (the state record, woken by the D-Bus StatusChanged signal),
// then runs internal/monitor's round loop against the local Postgres until the compute
// leaves running; it publishes last_active and the downtime figures into the state
// record (coalesced: at most once a second) and pings the systemd watchdog after each
// successful round only. While the compute runs it also carries out LFC prewarm and
// offload (internal/lfc; lfc.go): the D-Bus methods compute-api calls, autoprewarm, the
// periodic offload, each change written into the state record; the installed
// extensions collection (extstats.go); and, with compliance audit, compute_ctl's
// clean-up of old audit files with the compute_audit_log_dir_size figure (audit.go). It
// never moves the status (it writes through state.Store.Update).
package monitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/monitor"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgconf"
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
	// With one, Interval plus RoundTimeout must stay below it (Run refuses otherwise).
	Watchdog time.Duration
	// RoundTimeout bounds a round (0: monitor.DefaultRoundTimeout); with a watchdog it is
	// at most half the watchdog interval.
	RoundTimeout time.Duration
	// LFCTick is how often the periodic LFC offload is looked at and a running prewarm's
	// progress published (0: DefaultLFCTick).
	LFCTick time.Duration
	// ExtStatsInterval is the base interval of the installed extensions collection when
	// the spec's suspend_timeout_seconds gives none (0: extstats.DefaultInterval).
	ExtStatsInterval time.Duration
	// ExtStatsStartDelay delays a primary's first collection after running (0:
	// DefaultExtStatsStartDelay).
	ExtStatsStartDelay time.Duration
	// PGData is the data directory, whose log directory holds the compliance audit
	// files (empty: no audit clean-up).
	PGData string
	// AuditSweepInterval is how often the old audit files are deleted (0:
	// DefaultAuditSweepInterval).
	AuditSweepInterval time.Duration
	// TrimAfter is how long the monitor runs (a lifecycle's rounds, or a wait for
	// running) before Deps.Trim gives back what start-up alone touched (0:
	// DefaultTrimAfter; negative: never).
	TrimAfter time.Duration
}

// DefaultTrimAfter is past a lifecycle's first rounds and its first installed-extensions
// collection (DefaultExtStatsStartDelay after running).
const DefaultTrimAfter = 30 * time.Second

// ErrConfig marks the errors of a configuration that cannot work (compute-monitor exits
// with EX_CONFIG, 78, and the unit does not restart it for those).
var ErrConfig = errors.New("configuration error")

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
	// LFC receives the D-Bus LFC methods (Main serves it); nil: Run makes one that no
	// one calls.
	LFC *LFC
	// LFCPostgres is the neon extension's LFC functions; nil: lfc.PG with Connstr.
	LFCPostgres LFCPostgres
	// LFCStorage is endpoint storage; nil: the one the applied config names, read again
	// at each call.
	LFCStorage lfc.Store
	// NoLFC: this process runs no LFC operation (it does not own the monitor's bus name:
	// another instance does, or there is no bus); the LFC methods refuse.
	NoLFC bool
	// LFCChanged is called after each LFC state written into the record (the D-Bus
	// Changed signal); nil: nothing.
	LFCChanged func(seq uint64)
	// CollectExtensions collects the installed extensions; nil: pgcollect.Collect with
	// Connstr.
	CollectExtensions func(ctx context.Context) (extstats.Stats, error)
	// ExtStatsClock is the installed extensions scheduler's clock; nil: the system clock.
	ExtStatsClock extstats.Clock
	// Trim gives back the resident pages start-up alone used (memtrim in production),
	// called once per lifecycle and per wait for running, Settings.TrimAfter into it;
	// nil: never.
	Trim func()
	// AuditClock is the audit clean-up's clock; nil: the system clock.
	AuditClock monitor.Clock

	afterRound      func() // tests: called after each round is published
	afterAuditSweep func() // tests: called after each audit clean-up
}

// errStale refuses a write into a record that is no longer the one being monitored.
var errStale = errors.New("the compute left running or began a new lifecycle")

// monitored says whether the monitor runs for r: the compute is running (or being
// reconfigured, Postgres still serving) within the lifecycle that began at start.
func monitored(r state.Record, start time.Time) bool {
	if !r.StartTime.Equal(start) {
		return false
	}
	return r.Status.Serving()
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
	if m.d.LFC == nil {
		m.d.LFC = NewLFC()
	}
	if m.s.Recheck <= 0 {
		m.s.Recheck = 5 * time.Second
	}
	if err := m.s.bound(); err != nil {
		return err
	}
	if m.d.Connect == nil {
		cfg, err := pg.Config(s.Connstr, monitor.AppName)
		if err != nil {
			return fmt.Errorf("%w: --connstr: %w", ErrConfig, err)
		}
		m.d.Connect = monitor.PGConnector(s.Connstr, cfg.User)
		m.ownConnect = true
	}
	if cfg, err := pg.Config(s.Connstr, monitor.AppName); err == nil {
		m.connPort, m.connUser = int(cfg.Port), cfg.User
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

// bound applies the defaults of Interval and RoundTimeout and checks them against the
// watchdog: a round that may take Interval plus RoundTimeout (a tick coalesced behind a
// round that timed out) must end, and feed the watchdog when Postgres answers, before
// the watchdog fires. RoundTimeout is clamped to half the watchdog interval.
func (s *Settings) bound() error {
	if s.Interval <= 0 {
		s.Interval = monitor.DefaultInterval
	}
	if s.RoundTimeout <= 0 {
		s.RoundTimeout = monitor.DefaultRoundTimeout
	}
	if s.Watchdog <= 0 {
		return nil
	}
	s.RoundTimeout = min(s.RoundTimeout, s.Watchdog/2)
	if s.Interval+s.RoundTimeout >= s.Watchdog {
		return fmt.Errorf("%w: the interval (--interval, COMPUTE_MONITOR_INTERVAL) %s plus the round timeout %s must stay below the watchdog interval (WatchdogSec=) %s",
			ErrConfig, s.Interval, s.RoundTimeout, s.Watchdog)
	}
	return nil
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
	// connPort and connUser are the port and user of s.Connstr; ownConnect: d.Connect is
	// the default connector on s.Connstr (so it follows the spec's port, forSpec).
	connPort   int
	connUser   string
	ownConnect bool
}

// forSpec is m for a lifecycle whose applied config is l: when the spec moves Postgres to
// another port and the connection string is the packaged default, the connections follow
// it, as compute-init's and the configure step's do (pgconf.AdminConnstr).
func (m *runner) forSpec(l *spec.Loaded) *runner {
	if l == nil || m.connPort == 0 {
		return m
	}
	connstr, port, err := pgconf.AdminConnstr(m.s.Connstr, m.connPort, l.Spec)
	if err != nil {
		m.log.Error("postgres connection", "err", err)
		return m
	}
	if connstr == m.s.Connstr {
		return m
	}
	c := *m
	c.s.Connstr = connstr
	if m.ownConnect {
		c.d.Connect = monitor.PGConnector(connstr, m.connUser)
	}
	m.log.Info("the admin connection follows the spec's port", "port", port)
	return &c
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
	if after := m.s.trimAfter(); m.d.Trim != nil && after > 0 {
		t := time.AfterFunc(after, m.d.Trim)
		defer t.Stop()
	}
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

// appliedConfig reads the applied config: the config the running compute was configured
// with.
func (m *runner) appliedConfig() (*spec.Loaded, error) {
	p := paths.AppliedConfigFile(m.s.StateDir)
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("no applied config: %w", err)
	}
	l, err := spec.Load(raw)
	if err != nil {
		return nil, fmt.Errorf("applied config %s: %w", p, err)
	}
	return l, nil
}

// monitor runs the round loop for the lifecycle of rec until the compute leaves running
// (or ctx ends).
func (m *runner) monitor(ctx context.Context, rec state.Record) {
	start := rec.StartTime
	// Without an applied config (or with one that does not load) the stats-delta rule,
	// autoprewarm and the periodic offload are off.
	applied, err := m.appliedConfig()
	if err != nil {
		m.log.Warn("the stats-delta rule, autoprewarm and the periodic LFC offload are off", "err", err)
		applied = nil
	}
	m = m.forSpec(applied)
	var features []string
	if applied != nil {
		features = applied.ComputeSpec().Features
	}
	now := m.d.Clock.Now()
	var seed time.Time
	if rec.LastActive != nil {
		seed = *rec.LastActive
	}
	downtime, carry := resumeDowntime(rec, now)
	p := &publisher{
		store: m.d.Store, log: m.log, start: start, notifier: m.d.Notifier,
		tracker:  monitor.NewTracker(seed, m.s.PublishInterval),
		downtime: downtime, carry: carry, down: downtime.Down(),
		interval: m.s.PublishInterval, watchdog: m.s.Watchdog > 0,
		pubCurrent: rec.PGCurrentDowntimeMs,
	}
	if p.interval <= 0 {
		p.interval = monitor.DefaultPublishInterval
	}
	trim := &settleTrim{after: m.s.trimAfter(), trim: m.d.Trim}
	loop := &monitor.Loop{
		Connect:  m.d.Connect,
		Sampler:  &monitor.Sampler{StatsDelta: monitor.StatsDeltaEnabled(features)},
		Tracker:  p.tracker,
		Downtime: p.downtime,
		Interval: m.s.Interval,
		// RoundTimeout as bound by Run (the watchdog).
		RoundTimeout: m.s.RoundTimeout,
		Clock:        m.d.Clock,
		OnRound: func(ok bool, _ monitor.Sample) {
			now := m.d.Clock.Now()
			p.round(ok, now)
			trim.round(now)
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
	var lr *lfcRun
	if !m.d.NoLFC {
		// A restored run's leftover queries are cancelled first (bounded work, up to a few
		// seconds against a slow Postgres): the process is healthy meanwhile, so the
		// watchdog is fed.
		stopFeed := func() {}
		if interrupted(rec) {
			stopFeed = m.feedWatchdog(ctx)
		}
		lr = m.startLFC(lctx, rec, lfcOptionsOf(applied))
		stopFeed()
		m.d.LFC.set(lr)
	}
	waitExtStats := m.startExtStats(lctx, rec)
	waitAudit := m.startAuditSweep(lctx, rec, applied)
	defer func() {
		m.d.LFC.set(nil)
		cancel()
		if lr != nil {
			lr.stop()
		}
		waitExtStats()
		waitAudit()
	}()
	if p.down {
		m.log.Info("resuming an outage of postgres", "current_downtime_ms", downtime.CurrentMs())
		m.notify(m.d.Notifier.Status(statusDown))
	} else {
		m.notify(m.d.Notifier.Status(statusMonitoring))
	}
	_ = loop.Run(lctx)
	cancel()
	select {
	case r := <-watched:
		m.log.Info("compute left running: activity monitor waits", "status", string(r.Status))
	default:
	}
	p.flush(m.d.Clock.Now())
}

// settleTrim calls trim once, at the first round at least after past a lifecycle's first
// round (the loop's goroutine: no timer of its own).
type settleTrim struct {
	after time.Duration
	trim  func()
	first time.Time
	done  bool
}

func (t *settleTrim) round(now time.Time) {
	if t.done || t.trim == nil || t.after <= 0 {
		return
	}
	if t.first.IsZero() {
		t.first = now
		return
	}
	if now.Sub(t.first) >= t.after {
		t.done = true
		t.trim()
	}
}

func (s *Settings) trimAfter() time.Duration {
	if s.TrimAfter == 0 {
		return DefaultTrimAfter
	}
	return s.TrimAfter
}

// resumeDowntime takes over the downtime of rec at now (the monitor was restarted, by the
// watchdog during an outage, or the rounds stopped and started again): an outage in the
// record goes on from its start, pg_down_since, so the restart's own time counts. carry is
// the part of the outage not yet in the record's total (now minus pg_down_since, less
// pg_current_downtime_ms, which is what the total already holds of it): the publisher adds
// it at the first round if that round fails too, as the reference counts an interval as
// downtime only when the round that ends it fails.
func resumeDowntime(rec state.Record, now time.Time) (d *monitor.Downtime, carry uint64) {
	if rec.PGDownSince == nil {
		// No outage, or one written by a monitor that did not keep its start.
		return monitor.ResumeDowntime(now, time.Duration(rec.PGCurrentDowntimeMs)*time.Millisecond), 0
	}
	d = monitor.ResumeOutage(now, *rec.PGDownSince)
	if cur := uint64(d.CurrentMs()); cur > rec.PGCurrentDowntimeMs {
		carry = cur - rec.PGCurrentDowntimeMs
	}
	return d, carry
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

	// carry is downtime of a resumed outage not in the record's total yet: added with
	// the loop's total if the first round fails, dropped if it succeeds.
	carry       uint64
	rounds      int       // rounds seen
	pubCurrent  uint64    // the current downtime last written
	pubTotal    uint64    // carry plus the loop's total downtime last added to the record's counter
	downWritten time.Time // when the downtime figures were last written
	down        bool      // the last round failed (or an outage was resumed)
	stale       bool      // the record is not ours anymore: write nothing
	failing     bool      // the last write failed (logged once per run of failures)
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
	if p.rounds == 0 && ok {
		p.carry = 0
	}
	p.rounds++
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
	cur, total := uint64(p.downtime.CurrentMs()), p.carry+uint64(p.downtime.TotalMs())
	since, down := p.downtime.DownSince()
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
			r.PGDownSince = nil
			if down {
				v := since.UTC()
				r.PGDownSince = &v
			}
		}
		return nil
	})
	if errors.Is(err, errStale) {
		p.stale = true
		return
	}
	if err != nil {
		if !p.failing {
			p.failing = true
			p.log.Warn("could not publish the activity into the state record; retrying at each round", "err", err)
		} else {
			p.log.Debug("could not publish the activity into the state record", "err", err)
		}
		return // due again at the next round
	}
	if p.failing {
		p.failing = false
		p.log.Info("published the activity into the state record again")
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
