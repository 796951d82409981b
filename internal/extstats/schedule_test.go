package extstats

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is moved by the test. Every timer the scheduler makes is handed to the test
// on timers; the test fires it (moving the clock to its deadline).
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers chan *fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	c       chan time.Time
	stopped atomic.Bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool          { return !t.stopped.Swap(true) }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{d: d, c: make(chan time.Time, 1)}
	c.timers <- t
	return t
}

func (c *fakeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// syncBuf is a log sink safe for the scheduler's goroutine and the test.
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

// rig runs a Scheduler whose collections the test answers one by one.
type rig struct {
	t         *testing.T
	clock     *fakeClock
	base      atomic.Int64 // the atomic value, as a Duration
	calls     chan chan result
	published chan Stats
	logs      *syncBuf
	cancel    context.CancelFunc
	done      chan error

	stopOnce sync.Once
	runErr   error
}

type result struct {
	s    Stats
	err  error
	took time.Duration // the clock moves by this much during the collection
}

// guard bounds every wait of the test so that a broken scheduler fails the test
// instead of hanging it; it is not a timing assertion.
const guard = 10 * time.Second

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newRig(t *testing.T, base time.Duration, setup func(*Scheduler)) *rig {
	t.Helper()
	r := &rig{
		t:         t,
		clock:     &fakeClock{now: t0, timers: make(chan *fakeTimer, 1)},
		calls:     make(chan chan result),
		published: make(chan Stats, 10),
		logs:      &syncBuf{},
		done:      make(chan error, 1),
	}
	r.base.Store(int64(base))
	s := &Scheduler{
		Collect: func(ctx context.Context) (Stats, error) {
			answer := make(chan result)
			select {
			case r.calls <- answer:
			case <-ctx.Done():
				return Stats{}, ctx.Err()
			}
			select {
			case res := <-answer:
				r.clock.advance(res.took)
				return res.s, res.err
			case <-ctx.Done():
				return Stats{}, ctx.Err()
			}
		},
		Publish: func(_ context.Context, s Stats) error { r.published <- s; return nil },
		Base:    func() time.Duration { return time.Duration(r.base.Load()) },
		Clock:   r.clock,
		Log:     slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels Run and returns its error (once; later calls return the same).
func (r *rig) stop() error {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.runErr = <-r.done:
		case <-time.After(guard):
			r.t.Error("scheduler did not stop")
		}
	})
	return r.runErr
}

// expectTimer waits for the scheduler to wait, checks for how long, and fires the timer.
func (r *rig) expectTimer(d time.Duration) {
	r.t.Helper()
	select {
	case tm := <-r.clock.timers:
		if tm.d != d {
			r.t.Fatalf("waits %v, want %v", tm.d, d)
		}
		tm.c <- r.clock.advance(d)
	case call := <-r.calls:
		close(call)
		r.t.Fatalf("collected, want a wait of %v first", d)
	case <-time.After(guard):
		r.t.Fatalf("no wait of %v", d)
	}
}

// expectCollect waits for a collection and answers it with res.
func (r *rig) expectCollect(res result) {
	r.t.Helper()
	select {
	case call := <-r.calls:
		call <- res
	case tm := <-r.clock.timers:
		r.t.Fatalf("waits %v, want a collection first", tm.d)
	case <-time.After(guard):
		r.t.Fatal("no collection")
	}
}

func (r *rig) expectPublished() Stats {
	r.t.Helper()
	select {
	case s := <-r.published:
		return s
	case <-time.After(guard):
		r.t.Fatal("nothing published")
		return Stats{}
	}
}

func stats(n int) Stats {
	return Stats{Extensions: []Extension{{"plpgsql", "1.0", n, Superuser}}, Databases: n}
}

func TestSchedulerFollowsTheReferenceLoop(t *testing.T) {
	r := newRig(t, time.Hour, func(s *Scheduler) { s.AtStart = true })

	// A primary's start: at once.
	r.expectCollect(result{s: stats(3), took: 2 * time.Second})
	got := r.expectPublished()
	if got.Databases != 3 || !got.CollectedAt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("published %+v, want 3 databases collected at the end (t0+2s)", got)
	}
	if !strings.Contains(r.logs.String(), `msg="[NEON_EXT_STAT] {\"extensions\":[{\"extname\":\"plpgsql\",\"version\":\"1.0\",\"n_databases\":3,\"owned_by_superuser\":\"1\"}]}"`) {
		t.Errorf("no stat line in\n%s", r.logs)
	}

	// Then twice the base interval.
	r.expectTimer(2 * time.Hour)
	// A reconfiguration raises the base during the wait: the wait under way is not
	// changed, the next one is.
	r.base.Store(int64(3 * time.Hour))
	r.expectCollect(result{s: stats(4)})
	r.expectPublished()
	r.expectTimer(6 * time.Hour)

	// A lower base never shortens the interval.
	r.base.Store(int64(10 * time.Minute))
	r.expectCollect(result{s: stats(5)})
	r.expectPublished()
	r.expectTimer(6 * time.Hour)

	// A failed collection publishes nothing, is logged, and the loop goes on.
	r.expectCollect(result{err: errors.New("connection refused")})
	r.expectTimer(6 * time.Hour)
	select {
	case s := <-r.published:
		t.Errorf("a failed collection published %+v", s)
	default:
	}
	if !strings.Contains(r.logs.String(), `level=WARN msg="could not get installed extensions" err="connection refused"`) {
		t.Errorf("no warning in\n%s", r.logs)
	}
	r.expectCollect(result{s: stats(6)})
	if got := r.expectPublished(); got.Databases != 6 {
		t.Errorf("published %+v", got)
	}
}

func TestSchedulerWithoutAtStartWaitsFirst(t *testing.T) {
	r := newRig(t, 90*time.Second, nil) // a replica's compute: no collection at start
	r.expectTimer(3 * time.Minute)
	r.expectCollect(result{s: stats(1)})
	r.expectPublished()
	r.expectTimer(3 * time.Minute)
}

func TestSchedulerDefaultsTheBase(t *testing.T) {
	r := newRig(t, 0, nil) // Base answers 0: DefaultInterval
	r.expectTimer(2 * DefaultInterval)

	r2 := newRig(t, time.Hour, func(s *Scheduler) { s.Base = nil })
	r2.expectTimer(2 * DefaultInterval)
}

func TestSchedulerResumesFromLast(t *testing.T) {
	// The last collection ended 30 minutes ago: the next is due in 1h30, not at once
	// (AtStart is ignored).
	r := newRig(t, time.Hour, func(s *Scheduler) {
		s.AtStart = true
		s.Last = t0.Add(-30 * time.Minute)
	})
	r.expectTimer(90 * time.Minute)
	r.expectCollect(result{s: stats(1)})
	r.expectPublished()
	r.expectTimer(2 * time.Hour)

	// Overdue: at once.
	r2 := newRig(t, time.Hour, func(s *Scheduler) { s.Last = t0.Add(-5 * time.Hour) })
	r2.expectCollect(result{s: stats(2)})
	r2.expectPublished()
	r2.expectTimer(2 * time.Hour)
}

func TestSchedulerStopsDuringAWait(t *testing.T) {
	r := newRig(t, time.Hour, nil)
	var tm *fakeTimer
	select {
	case tm = <-r.clock.timers:
	case <-time.After(guard):
		t.Fatal("no wait")
	}
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if !tm.stopped.Load() {
		t.Error("the timer was not stopped")
	}
}

func TestSchedulerStopsDuringACollection(t *testing.T) {
	r := newRig(t, time.Hour, func(s *Scheduler) { s.AtStart = true })
	select {
	case <-r.calls: // a collection is under way; never answered
	case <-time.After(guard):
		t.Fatal("no collection")
	}
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if len(r.published) != 0 {
		t.Error("a cancelled collection was published")
	}
	if strings.Contains(r.logs.String(), "could not get installed extensions") {
		t.Errorf("a cancelled collection was logged as failed:\n%s", r.logs)
	}
}

func TestSchedulerBoundsACollection(t *testing.T) {
	// The collection's context carries the timeout; a collection that hits it fails.
	deadline := make(chan time.Duration, 1)
	s := &Scheduler{
		Collect: func(ctx context.Context) (Stats, error) {
			d, ok := ctx.Deadline()
			if !ok {
				deadline <- -1
			} else {
				deadline <- time.Until(d)
			}
			return Stats{}, errors.New("stop")
		},
		Timeout: time.Hour,
		AtStart: true,
		Clock:   &fakeClock{now: t0, timers: make(chan *fakeTimer, 1)},
		Log:     slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case d := <-deadline:
		if d <= 0 || d > time.Hour {
			t.Errorf("collection deadline in %v, want within the hour", d)
		}
	case <-time.After(guard):
		t.Fatal("no collection")
	}
	cancel()
	<-done
}

func TestSchedulerPublishFailureIsLogged(t *testing.T) {
	logs := &syncBuf{}
	clk := &fakeClock{now: t0, timers: make(chan *fakeTimer, 1)}
	s := &Scheduler{
		Collect: func(context.Context) (Stats, error) { return stats(1), nil },
		Publish: func(context.Context, Stats) error { return errors.New("disk full") },
		AtStart: true,
		Clock:   clk,
		Log:     slog.New(slog.NewTextHandler(logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-clk.timers: // collected, published, now waiting
	case <-time.After(guard):
		t.Fatal("no wait after the collection")
	}
	cancel()
	<-done
	if !strings.Contains(logs.String(), `level=WARN msg="could not publish installed extensions" err="disk full"`) {
		t.Errorf("no warning in\n%s", logs)
	}
}

func TestSchedulerNeedsCollect(t *testing.T) {
	if err := (&Scheduler{}).Run(context.Background()); err == nil {
		t.Error("Run without Collect succeeded")
	}
}
