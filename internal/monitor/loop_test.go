package monitor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is moved by the test; its ticker ticks when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	ticker *fakeTicker
	period time.Duration
}

type fakeTicker struct {
	c       chan time.Time
	stopped chan struct{}
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop()               { close(t.stopped) }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.period = d
	c.ticker = &fakeTicker{c: make(chan time.Time), stopped: make(chan struct{})}
	return c.ticker
}

// tick moves the clock by d and ticks (blocking until the loop takes the tick).
func (c *fakeClock) tick(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now, tk := c.now, c.ticker
	c.mu.Unlock()
	tk.c <- now
}

// fakeConns hands out fakeConn connections; each answers from the shared behaviour.
type fakeConns struct {
	mu         sync.Mutex
	connectErr error
	src        fakeSource
	block      bool // queries wait for the context to end
	connects   int
	closes     int
}

type fakeConn struct{ f *fakeConns }

func (c fakeConn) src(ctx context.Context) (*fakeSource, error) {
	c.f.mu.Lock()
	block := c.f.block
	src := c.f.src
	c.f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &src, nil
}

func (c fakeConn) DatabaseStats(ctx context.Context) (DatabaseStats, error) {
	s, err := c.src(ctx)
	if err != nil {
		return DatabaseStats{}, err
	}
	return s.DatabaseStats(ctx)
}
func (c fakeConn) Backends(ctx context.Context) ([]Backend, error) {
	s, err := c.src(ctx)
	if err != nil {
		return nil, err
	}
	return s.Backends(ctx)
}
func (c fakeConn) Walsenders(ctx context.Context) (int64, error) {
	s, err := c.src(ctx)
	if err != nil {
		return 0, err
	}
	return s.Walsenders(ctx)
}
func (c fakeConn) Subscriptions(ctx context.Context) (int64, error) {
	s, err := c.src(ctx)
	if err != nil {
		return 0, err
	}
	return s.Subscriptions(ctx)
}
func (c fakeConn) AutovacuumWorkers(ctx context.Context) (int64, error) {
	s, err := c.src(ctx)
	if err != nil {
		return 0, err
	}
	return s.AutovacuumWorkers(ctx)
}
func (c fakeConn) Close(context.Context) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.closes++
	return nil
}

func (f *fakeConns) connect(context.Context) (Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects++
	if f.connectErr != nil {
		return nil, f.connectErr
	}
	return fakeConn{f}, nil
}

func (f *fakeConns) set(fn func(f *fakeConns)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeConns) counts() (connects, closes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects, f.closes
}

type round struct {
	ok bool
	s  Sample
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type loopRig struct {
	clock  *fakeClock
	conns  *fakeConns
	loop   *Loop
	rounds chan round
	logs   *syncBuf
	cancel context.CancelFunc
	done   chan error
}

func startLoop(t *testing.T, conns *fakeConns, configure func(*Loop)) *loopRig {
	t.Helper()
	r := &loopRig{clock: &fakeClock{now: t0}, conns: conns, rounds: make(chan round), logs: &syncBuf{}, done: make(chan error, 1)}
	r.loop = &Loop{
		Connect:  conns.connect,
		Sampler:  &Sampler{},
		Tracker:  NewTracker(time.Time{}, time.Second),
		Clock:    r.clock,
		Interval: 250 * time.Millisecond,
		OnRound:  func(ok bool, s Sample) { r.rounds <- round{ok, s} },
		Log:      slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if configure != nil {
		configure(r.loop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.loop.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *loopRig) next(t *testing.T) round {
	t.Helper()
	select {
	case rd := <-r.rounds:
		return rd
	case err := <-r.done:
		t.Fatalf("loop ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no round in 10 s")
	}
	return round{}
}

func TestLoopRounds(t *testing.T) {
	idleAt := t0.Add(-time.Minute)
	conns := &fakeConns{src: fakeSource{backs: []Backend{{State: ptr("idle"), StateChange: &idleAt}}}}
	r := startLoop(t, conns, nil)
	rd := r.next(t) // the first round runs at once
	r.clock.mu.Lock()
	if r.clock.period != 250*time.Millisecond {
		t.Errorf("ticker period %v, want the Interval", r.clock.period)
	}
	r.clock.mu.Unlock()
	if !rd.ok || rd.s.Reason != ReasonBackendIdle || !rd.s.LastActive.Equal(idleAt) {
		t.Fatalf("first round %+v", rd)
	}
	if v, ok := r.loop.Tracker.Value(); !ok || !v.Equal(idleAt) {
		t.Errorf("tracker %v %v", v, ok)
	}

	// Active: last_active is the clock's now.
	conns.set(func(f *fakeConns) { f.src.backs = []Backend{{State: ptr("active")}} })
	r.clock.tick(250 * time.Millisecond)
	rd = r.next(t)
	if !rd.ok || rd.s.Reason != ReasonBackendActive || !rd.s.LastActive.Equal(t0.Add(250*time.Millisecond)) {
		t.Fatalf("second round %+v", rd)
	}
	if c, _ := conns.counts(); c != 1 {
		t.Errorf("%d connects, want 1 (the connection is kept)", c)
	}

	r.cancel()
	if err := <-r.done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	r.done <- nil // for the cleanup
	if _, closes := conns.counts(); closes != 1 {
		t.Errorf("%d closes at the end, want 1", closes)
	}
	select {
	case <-r.clock.ticker.stopped:
	default:
		t.Error("ticker not stopped")
	}
}

func TestLoopFailuresAndRecovery(t *testing.T) {
	conns := &fakeConns{connectErr: errors.New("connection refused")}
	r := startLoop(t, conns, func(l *Loop) { l.Downtime = NewDowntime(t0) })
	d := r.loop.Downtime

	// Down from the start: connect fails.
	if rd := r.next(t); rd.ok || rd.s != (Sample{}) {
		t.Fatalf("round with a failed connect: %+v", rd)
	}
	r.clock.tick(500 * time.Millisecond)
	r.next(t)
	if d.CurrentMs() != 500 || d.TotalMs() != 500 {
		t.Errorf("after two failed rounds: current %d total %d, want 500 500", d.CurrentMs(), d.TotalMs())
	}
	if c, _ := conns.counts(); c != 2 {
		t.Errorf("%d connects, want one per round", c)
	}

	// Up.
	conns.set(func(f *fakeConns) { f.connectErr = nil })
	r.clock.tick(500 * time.Millisecond)
	if rd := r.next(t); !rd.ok {
		t.Fatal("round after recovery failed")
	}
	if d.CurrentMs() != 0 || d.TotalMs() != 500 {
		t.Errorf("after recovery: current %d total %d, want 0 500", d.CurrentMs(), d.TotalMs())
	}

	// A query fails: the connection is closed and the next round reconnects.
	conns.set(func(f *fakeConns) { f.src.errWal = errors.New("server closed the connection unexpectedly") })
	r.clock.tick(500 * time.Millisecond)
	if rd := r.next(t); rd.ok {
		t.Fatal("round with a failed query succeeded")
	}
	if connects, closes := conns.counts(); connects != 3 || closes != 1 {
		t.Errorf("connects %d closes %d, want 3 1", connects, closes)
	}
	if d.CurrentMs() != 500 || d.TotalMs() != 1000 {
		t.Errorf("after a failed query: current %d total %d, want 500 1000", d.CurrentMs(), d.TotalMs())
	}
	conns.set(func(f *fakeConns) { f.src.errWal = nil })
	r.clock.tick(500 * time.Millisecond)
	if rd := r.next(t); !rd.ok {
		t.Fatal("round after reconnect failed")
	}
	if connects, _ := conns.counts(); connects != 4 {
		t.Errorf("connects %d, want 4 (a reconnect)", connects)
	}

	logs := r.logs.String()
	if n := strings.Count(logs, "level=WARN msg=\"activity check failed; reconnecting at the next round\""); n != 2 {
		t.Errorf("%d warnings, want one per outage (2):\n%s", n, logs)
	}
	if !strings.Contains(logs, `err="connection refused"`) || !strings.Contains(logs, "level=DEBUG msg=\"activity check failed\" err=\"connection refused\" current_downtime_ms=500") {
		t.Errorf("failures not logged with err:\n%s", logs)
	}
	if n := strings.Count(logs, "level=INFO msg=\"postgres reachable again\" downtime_ms=1000\n"); n != 2 {
		t.Errorf("recovery not logged with the outage's length:\n%s", logs)
	}
}

// A query that hangs fails the round at RoundTimeout.
func TestLoopRoundTimeout(t *testing.T) {
	conns := &fakeConns{block: true}
	r := startLoop(t, conns, func(l *Loop) { l.RoundTimeout = 20 * time.Millisecond })
	if rd := r.next(t); rd.ok {
		t.Fatal("a hung round succeeded")
	}
	if !strings.Contains(r.logs.String(), "context deadline exceeded") {
		t.Errorf("timeout not logged:\n%s", r.logs.String())
	}
	if _, closes := conns.counts(); closes != 1 {
		t.Errorf("%d closes, want the hung connection closed", closes)
	}
}

// Stopping in the middle of a round is not an outcome: no callback, no downtime.
func TestLoopCancelDuringRound(t *testing.T) {
	conns := &fakeConns{block: true}
	d := NewDowntime(t0)
	called := make(chan struct{}, 1)
	clock := &fakeClock{now: t0}
	l := &Loop{Connect: conns.connect, Sampler: &Sampler{}, Clock: clock, Downtime: d,
		OnRound: func(bool, Sample) { called <- struct{}{} }, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	clock.mu.Lock()
	clock.now = t0.Add(time.Second)
	clock.mu.Unlock()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	select {
	case <-called:
		t.Error("OnRound called for a round cut short by shutdown")
	default:
	}
	if d.TotalMs() != 0 {
		t.Errorf("downtime %d ms from a round cut short by shutdown", d.TotalMs())
	}
}

func TestLoopDefaults(t *testing.T) {
	if err := (&Loop{Sampler: &Sampler{}}).Run(context.Background()); err == nil {
		t.Error("Run without Connect succeeded")
	}
	if err := (&Loop{Connect: (&fakeConns{}).connect}).Run(context.Background()); err == nil {
		t.Error("Run without Sampler succeeded")
	}
	// The real clock and the defaults: one round, then stop.
	l := &Loop{Connect: (&fakeConns{}).connect, Sampler: &Sampler{}}
	ctx, cancel := context.WithCancel(context.Background())
	l.OnRound = func(ok bool, _ Sample) {
		if !ok {
			t.Error("round failed")
		}
		cancel()
	}
	if err := l.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if l.Interval != DefaultInterval || l.RoundTimeout != DefaultRoundTimeout || l.Downtime == nil || l.Sampler.Now == nil {
		t.Errorf("defaults not set: %+v", l)
	}
}

// A loop that resumes an outage (a monitor restarted while Postgres was down) starts down:
// its first successful round logs the recovery with the whole outage's length.
func TestLoopResumedOutageLogsRecovery(t *testing.T) {
	conns := &fakeConns{}
	r := startLoop(t, conns, func(l *Loop) { l.Downtime = ResumeOutage(t0, t0.Add(-12*time.Second)) })
	if rd := r.next(t); !rd.ok {
		t.Fatal("first round failed")
	}
	if d := r.loop.Downtime; d.CurrentMs() != 0 || d.Down() {
		t.Errorf("after recovery: current %d down %v", d.CurrentMs(), d.Down())
	}
	if logs := r.logs.String(); !strings.Contains(logs, "level=INFO msg=\"postgres reachable again\" downtime_ms=12000\n") {
		t.Errorf("recovery of a resumed outage not logged:\n%s", logs)
	}
}
