package monitord

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/monitor"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is moved by the test; each ticker it makes ticks when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers chan *fakeTicker
}

type fakeTicker struct{ c chan time.Time }

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop()               {}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTicker(time.Duration) monitor.Ticker {
	t := &fakeTicker{c: make(chan time.Time)}
	c.tickers <- t
	return t
}

func (c *fakeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// fakeNotifier counts what the monitor tells systemd.
type fakeNotifier struct {
	mu        sync.Mutex
	ready     int
	watchdogs int
	statuses  []string
}

func (n *fakeNotifier) Ready(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ready++
	n.statuses = append(n.statuses, s)
	return nil
}

func (n *fakeNotifier) Status(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.statuses = append(n.statuses, s)
	return nil
}

func (n *fakeNotifier) Watchdog() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watchdogs++
	return nil
}

func (n *fakeNotifier) counts() (ready, watchdogs int, last string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.statuses) > 0 {
		last = n.statuses[len(n.statuses)-1]
	}
	return n.ready, n.watchdogs, last
}

// fakePG is a Postgres that is up (with an active session of a user) or down.
type fakePG struct {
	mu   sync.Mutex
	down bool
	idle bool
}

func (f *fakePG) set(down, idle bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.idle = down, idle
}

func (f *fakePG) connect(context.Context) (monitor.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("connection refused")
	}
	return fakeConn{f}, nil
}

type fakeConn struct{ f *fakePG }

func (c fakeConn) err() error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.f.down {
		return errors.New("connection closed")
	}
	return nil
}

func (c fakeConn) DatabaseStats(context.Context) (monitor.DatabaseStats, error) {
	return monitor.DatabaseStats{}, c.err()
}

func (c fakeConn) Backends(context.Context) ([]monitor.Backend, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.f.idle {
		return nil, nil
	}
	active := "active"
	return []monitor.Backend{{State: &active}}, nil
}
func (c fakeConn) Walsenders(context.Context) (int64, error)        { return 0, c.err() }
func (c fakeConn) Subscriptions(context.Context) (int64, error)     { return 0, c.err() }
func (c fakeConn) AutovacuumWorkers(context.Context) (int64, error) { return 0, c.err() }
func (c fakeConn) Close(context.Context) error                      { return nil }

type rig struct {
	t      *testing.T
	store  *state.Store
	waker  *statetest.Waker
	clock  *fakeClock
	notif  *fakeNotifier
	pg     *fakePG
	cancel context.CancelFunc
	done   chan error
	ticker *fakeTicker
	rounds chan struct{}
}

func newRig(t *testing.T) *rig { return newRigWith(t, nil) }

// newRigWith lets a test change the settings and deps before Run.
func newRigWith(t *testing.T, change func(*Settings, *Deps)) *rig {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, store: store, waker: &statetest.Waker{}, clock: &fakeClock{now: t0, tickers: make(chan *fakeTicker)},
		notif: &fakeNotifier{}, pg: &fakePG{}, done: make(chan error, 1), rounds: make(chan struct{}, 100)}
	store.OnChange = func(state.Record) { r.waker.Notify() }
	statetest.MustSet(t, store, state.Init, nil)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	s := Settings{StateDir: t.TempDir(), Recheck: time.Hour, Watchdog: time.Hour}
	d := Deps{Store: store, Subscribe: r.waker.Subscribe, Connect: r.pg.connect, Notifier: r.notif, Clock: r.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), afterRound: func() { r.rounds <- struct{}{} }}
	if change != nil {
		change(&s, &d)
	}
	go func() { r.done <- Run(ctx, s, d) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// setStatus puts the record into st (a test shortcut past the lifecycle) and wakes.
func (r *rig) setStatus(st state.Status) {
	statetest.MustSet(r.t, r.store, st, nil)
	r.waker.Notify()
}

// started waits for the loop's ticker and its first round.
func (r *rig) started() {
	select {
	case r.ticker = <-r.clock.tickers:
	case <-time.After(5 * time.Second):
		r.t.Fatal("the loop did not start")
	}
	r.roundDone()
}

func (r *rig) roundDone() {
	select {
	case <-r.rounds:
	case <-time.After(5 * time.Second):
		r.t.Fatal("no round ended")
	}
}

// tick moves the clock by a round and ticks; it returns once that round ended.
func (r *rig) tick() {
	now := r.clock.advance(500 * time.Millisecond)
	select {
	case r.ticker.c <- now:
	case <-time.After(5 * time.Second):
		r.t.Fatal("the loop did not take a tick")
	}
	r.roundDone()
}

// waitWaiting waits until the monitor tells systemd it waits for running again.
func (r *rig) waitWaiting() {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, st := r.notif.counts(); st == statusWaiting {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("the monitor did not go back to waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) load() state.Record {
	rec, err := r.store.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	return rec
}

func TestReadyBeforeRunningAndWatchdogOnlyAfterGoodRounds(t *testing.T) {
	r := newRig(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ready, _, _ := r.notif.counts(); ready == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no READY=1 while waiting for running")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-r.clock.tickers:
		t.Fatal("the loop started before running")
	case <-time.After(50 * time.Millisecond):
	}
	_, waitPings, _ := r.notif.counts() // the waiting process feeds the watchdog itself
	r.setStatus(state.Running)
	r.started()
	r.tick() // round 2 ok (round 1 was at the start)
	_, w, st := r.notif.counts()
	if w-waitPings != 2 {
		t.Fatalf("watchdog pings after 2 good rounds: %d", w-waitPings)
	}
	if st != statusMonitoring {
		t.Fatalf("STATUS=%q", st)
	}
	r.pg.set(true, false)
	r.tick() // rounds 3 to 5 fail
	r.tick()
	r.tick()
	_, w, st = r.notif.counts()
	if w-waitPings != 2 {
		t.Fatalf("watchdog pings after 2 good and 3 failed rounds: %d", w-waitPings)
	}
	if st != statusDown {
		t.Fatalf("STATUS=%q while down", st)
	}
	r.pg.set(false, false)
	r.tick() // up again
	_, w2, _ := r.notif.counts()
	if w2-w != 1 {
		t.Fatalf("%d watchdog pings after one good round", w2-w)
	}
}

func TestPublishesLastActiveAndDowntime(t *testing.T) {
	r := newRig(t)
	r.setStatus(state.Running)
	r.started()
	rec := r.load() // round 1 (at t0) is published at once
	if rec.LastActive == nil || !rec.LastActive.Equal(t0) {
		t.Fatalf("last_active after the first round: %v", rec.LastActive)
	}
	seq := rec.Seq
	r.tick() // round 2 ended at +0.5 s: not due (1 s)
	if got := r.load(); got.Seq != seq {
		t.Fatalf("a write within the publish interval (seq %d -> %d)", seq, got.Seq)
	}
	r.tick() // round 3 at +1 s: due
	rec = r.load()
	if rec.LastActive == nil || !rec.LastActive.Equal(t0.Add(time.Second)) {
		t.Fatalf("last_active after 1 s: %v", rec.LastActive)
	}
	// Idle: last_active stays.
	r.pg.set(false, true)
	r.tick()
	r.tick()
	r.tick()
	la := *r.load().LastActive
	// Down: the downtime is written at the first failed round, then once a second.
	r.pg.set(true, false)
	r.tick() // a failed round
	rec = r.load()
	if rec.PGCurrentDowntimeMs == 0 || rec.Counters.PGDowntimeMsTotal == 0 {
		t.Fatalf("downtime not published at the first failed round: %+v", rec)
	}
	for range 4 {
		r.tick()
	}
	rec = r.load()
	if rec.PGCurrentDowntimeMs < 2000 {
		t.Fatalf("current downtime after 2.5 s down: %d", rec.PGCurrentDowntimeMs)
	}
	r.pg.set(false, true)
	r.tick()
	r.tick()
	rec = r.load()
	if rec.PGCurrentDowntimeMs != 0 {
		t.Fatalf("current downtime after recovery: %d", rec.PGCurrentDowntimeMs)
	}
	if rec.Counters.PGDowntimeMsTotal < 2500 || rec.Counters.PGDowntimeMsTotal > 3500 {
		t.Fatalf("total downtime %d ms, want about 3000", rec.Counters.PGDowntimeMsTotal)
	}
	if !rec.LastActive.Equal(la) {
		t.Fatalf("last_active moved while idle: %v -> %v", la, rec.LastActive)
	}
	if rec.Status != state.Running {
		t.Fatalf("status %s", rec.Status)
	}
}

func TestStopsWhenTheComputeLeavesRunningAndWaitsAgain(t *testing.T) {
	r := newRig(t)
	r.setStatus(state.Running)
	r.started()
	r.tick()
	failed := statetest.MustSet(t, r.store, state.Failed, nil)
	r.waker.Notify()
	r.waitWaiting()
	// The monitor flushes before it waits again: once it waits, nothing more is written,
	// so the record is still the failed one MustSet wrote.
	if got := r.load(); got.Seq != failed.Seq || got.Status != state.Failed {
		t.Fatalf("the monitor wrote into a failed compute's record: %+v", got)
	}
	// A new lifecycle: the monitor starts again from a fresh record.
	if _, err := statetest.Reset(r.store); err != nil {
		t.Fatal(err)
	}
	r.clock.advance(time.Minute)
	r.setStatus(state.Running)
	r.started()
	r.tick()
	rec := r.load()
	if rec.LastActive == nil || !rec.LastActive.After(t0.Add(time.Minute)) {
		t.Fatalf("last_active of the new lifecycle: %v", rec.LastActive)
	}
}

func TestAReconfigurationKeepsMonitoring(t *testing.T) {
	r := newRig(t)
	r.setStatus(state.Running)
	r.started()
	r.tick()
	r.setStatus(state.ConfigurationPending)
	time.Sleep(20 * time.Millisecond) // the watcher re-reads
	r.tick()
	r.tick()
	r.tick()
	if la := r.load().LastActive; la == nil || !la.After(t0) {
		t.Fatalf("last_active during a reconfiguration: %v", la)
	}
	select {
	case <-r.clock.tickers:
		t.Fatal("the loop restarted during a reconfiguration")
	default:
	}
}

func TestPublisherRefusesAStaleRecord(t *testing.T) {
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec := statetest.MustSet(t, store, state.Running, nil)
	p := &publisher{store: store, log: slog.New(slog.NewTextHandler(io.Discard, nil)), notifier: nopNotifier{},
		start: rec.StartTime, tracker: monitor.NewTracker(time.Time{}, time.Second),
		downtime: monitor.NewDowntime(t0), interval: time.Second}
	if _, err := statetest.Reset(store); err != nil { // a new lifecycle began
		t.Fatal(err)
	}
	statetest.MustSet(t, store, state.Running, nil)
	p.tracker.Observe(t0)
	p.round(true, t0)
	if got, _ := store.Load(); got.LastActive != nil {
		t.Fatalf("last_active written into another lifecycle: %v", got.LastActive)
	}
	if !p.stale {
		t.Fatal("publisher not stale")
	}
}

// A monitor restarted during an outage (the watchdog restarts it every WatchdogSec= while
// Postgres does not answer): the killed monitor last wrote 9 s of an outage that began 10 s
// ago (at t0-10s), and wrote nothing more. The restarted one goes on from pg_down_since:
// the second lost to the kill and the restart counts, in the current downtime and in the
// total, and the recovery is seen.
func TestResumesAnOutageAfterARestart(t *testing.T) {
	for _, upAtOnce := range []bool{false, true} {
		r := newRig(t)
		r.pg.set(true, false)
		since := t0.Add(-10 * time.Second)
		statetest.MustSet(t, r.store, state.Running, func(rec *state.Record) {
			rec.PGDownSince = &since
			rec.PGCurrentDowntimeMs = 9000
			rec.Counters.PGDowntimeMsTotal = 20000 // 11 s of an earlier outage, 9 s of this one
		})
		if upAtOnce {
			r.pg.set(false, false)
		}
		r.waker.Notify()
		r.started() // the first round, at t0
		rec := r.load()
		if upAtOnce {
			// Postgres came back during the restart: recovered, the unseen gap not counted
			// (as the reference counts no interval that a successful round ends).
			if rec.PGCurrentDowntimeMs != 0 || rec.PGDownSince != nil || rec.Counters.PGDowntimeMsTotal != 20000 {
				t.Fatalf("up at the first round: current %d since %v total %d, want 0 nil 20000",
					rec.PGCurrentDowntimeMs, rec.PGDownSince, rec.Counters.PGDowntimeMsTotal)
			}
			if _, _, st := r.notif.counts(); st != statusMonitoring {
				t.Fatalf("STATUS=%q after recovery", st)
			}
			r.cancel()
			continue
		}
		if rec.PGCurrentDowntimeMs != 10000 || rec.Counters.PGDowntimeMsTotal != 21000 {
			t.Fatalf("first round of a resumed outage: current %d total %d, want 10000 21000",
				rec.PGCurrentDowntimeMs, rec.Counters.PGDowntimeMsTotal)
		}
		if rec.PGDownSince == nil || !rec.PGDownSince.Equal(since) {
			t.Fatalf("pg_down_since %v, want %v", rec.PGDownSince, since)
		}
		if _, _, st := r.notif.counts(); st != statusDown {
			t.Fatalf("STATUS=%q while resuming an outage", st)
		}
		r.tick()
		r.tick() // t0+1s
		rec = r.load()
		if rec.PGCurrentDowntimeMs != 11000 || rec.Counters.PGDowntimeMsTotal != 22000 {
			t.Fatalf("a second later: current %d total %d, want 11000 22000", rec.PGCurrentDowntimeMs, rec.Counters.PGDowntimeMsTotal)
		}
		r.pg.set(false, false)
		r.tick()
		rec = r.load()
		if rec.PGCurrentDowntimeMs != 0 || rec.PGDownSince != nil || rec.Counters.PGDowntimeMsTotal != 22000 {
			t.Fatalf("after recovery: current %d since %v total %d, want 0 nil 22000",
				rec.PGCurrentDowntimeMs, rec.PGDownSince, rec.Counters.PGDowntimeMsTotal)
		}
		if _, _, st := r.notif.counts(); st != statusMonitoring {
			t.Fatalf("STATUS=%q after recovery", st)
		}
		r.cancel()
	}
}

// The outage's start is kept in the record while it lasts, so a restart can resume it.
func TestRecordsTheOutageStart(t *testing.T) {
	r := newRig(t)
	r.setStatus(state.Running)
	r.started() // up at t0
	r.tick()    // up at t0+0.5s: the end of the last good round
	r.pg.set(true, false)
	r.tick() // down at t0+1s
	rec := r.load()
	if rec.PGDownSince == nil || !rec.PGDownSince.Equal(t0.Add(500*time.Millisecond)) || rec.PGCurrentDowntimeMs != 500 {
		t.Fatalf("pg_down_since %v current %d, want %v 500", rec.PGDownSince, rec.PGCurrentDowntimeMs, t0.Add(500*time.Millisecond))
	}
}

func TestIntervalBoundByTheWatchdog(t *testing.T) {
	for _, c := range []struct {
		s       Settings
		wantErr bool
		timeout time.Duration
	}{
		{Settings{Watchdog: 10 * time.Second}, false, 5 * time.Second},
		{Settings{}, false, 5 * time.Second},
		{Settings{Watchdog: 2 * time.Second}, false, time.Second}, // clamped to half
		{Settings{Watchdog: 2 * time.Second, Interval: time.Second}, true, time.Second},
		{Settings{Watchdog: 10 * time.Second, Interval: 6 * time.Second}, true, 5 * time.Second},
		{Settings{Watchdog: 10 * time.Second, Interval: 4 * time.Second}, false, 5 * time.Second},
	} {
		s := c.s
		err := s.bound()
		if (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%+v: %v", c.s, err)
		}
		if s.RoundTimeout != c.timeout {
			t.Errorf("%+v: round timeout %s, want %s", c.s, s.RoundTimeout, c.timeout)
		}
	}
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Settings{Watchdog: time.Second, Interval: time.Second}, Deps{Store: store, Connect: (&fakePG{}).connect})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "WatchdogSec=") {
		t.Fatalf("Run with an interval past the watchdog: %v", err)
	}
	if err := Run(context.Background(), Settings{Connstr: "postgres://%zz"}, Deps{Store: store}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Run with a bad connstr: %v", err)
	}
}

// A write that keeps failing is logged once (warning), and its end once (info).
func TestPublishFailuresLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	store, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := statetest.MustSet(t, store, state.Running, nil)
	var logs strings.Builder
	p := &publisher{store: store, log: slog.New(slog.NewTextHandler(&logs, nil)), notifier: nopNotifier{},
		start: rec.StartTime, tracker: monitor.NewTracker(time.Time{}, time.Second),
		downtime: monitor.NewDowntime(t0), interval: time.Second}
	if err := os.Rename(dir, dir+".away"); err != nil { // the state directory is gone
		t.Fatal(err)
	}
	for i := range 5 {
		now := t0.Add(time.Duration(i) * time.Second)
		p.tracker.Observe(now)
		p.round(true, now)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(5 * time.Second)
	p.tracker.Observe(now)
	p.round(true, now)
	if got, _ := store.Load(); got.LastActive == nil || !got.LastActive.Equal(now) {
		t.Fatalf("last_active after the failures: %v", got.LastActive)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Errorf("%d warnings for a run of 5 failed writes, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "published the activity into the state record again"); n != 1 {
		t.Errorf("the end of the failures logged %d times, want 1:\n%s", n, out)
	}
}

// The start-up pages are given back once per lifecycle, TrimAfter after its first round
// (on the loop's clock), and once per wait for running that lasts TrimAfter.
func TestTrimOncePerLifecycle(t *testing.T) {
	var trims atomic.Int32
	r := newRigWith(t, func(s *Settings, d *Deps) {
		s.TrimAfter = 10 * time.Second // 20 rounds; the waits below last milliseconds
		d.Trim = func() { trims.Add(1) }
	})
	r.setStatus(state.Running)
	r.started()
	for i := 0; i < 19; i++ {
		r.tick()
	}
	if n := trims.Load(); n != 0 {
		t.Fatalf("%d trims 9.5 s into the lifecycle", n)
	}
	r.tick()
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims 10 s into the lifecycle, want 1", n)
	}
	for i := 0; i < 40; i++ {
		r.tick()
	}
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims 30 s into the lifecycle, want still 1", n)
	}
	// A new lifecycle trims again.
	r.setStatus(state.Failed)
	r.waitWaiting()
	if _, err := statetest.Reset(r.store); err != nil {
		t.Fatal(err)
	}
	r.clock.advance(time.Minute)
	r.setStatus(state.Running)
	r.started()
	for i := 0; i < 20; i++ {
		r.tick()
	}
	if n := trims.Load(); n != 2 {
		t.Fatalf("%d trims after the second lifecycle's 10 s, want 2", n)
	}
}

func TestTrimWhileWaiting(t *testing.T) {
	trimmed := make(chan struct{}, 10)
	newRigWith(t, func(s *Settings, d *Deps) {
		s.TrimAfter = 20 * time.Millisecond
		d.Trim = func() { trimmed <- struct{}{} }
	})
	select {
	case <-trimmed:
	case <-time.After(5 * time.Second):
		t.Fatal("no trim while waiting for running")
	}
	select {
	case <-trimmed:
		t.Fatal("a second trim in the same wait")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTrimNever(t *testing.T) {
	var trims atomic.Int32
	r := newRigWith(t, func(s *Settings, d *Deps) {
		s.TrimAfter = -1
		d.Trim = func() { trims.Add(1) }
	})
	r.setStatus(state.Running)
	r.started()
	for i := 0; i < 100; i++ {
		r.tick()
	}
	if n := trims.Load(); n != 0 {
		t.Fatalf("%d trims with TrimAfter < 0", n)
	}
}
