package vmmonitor

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

// fakePolicy records the calls it gets; its answers are set by the test. It fails the
// test if two calls ever overlap (the Server promises they never do).
type fakePolicy struct {
	t        testing.TB
	inFlight atomic.Int32
	reqs     chan struct{}

	mu         sync.Mutex
	resets     int
	upscales   []Allocation
	downscales []Allocation
	resetErr   error
	upscaleErr error
	downscale  func(ctx context.Context, target Allocation) (bool, string, error)
}

func newFakePolicy(t testing.TB) *fakePolicy {
	return &fakePolicy{t: t, reqs: make(chan struct{})}
}

// set changes the fake's answers under its lock.
func (p *fakePolicy) set(f func(p *fakePolicy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *fakePolicy) enter() func() {
	if p.inFlight.Add(1) != 1 {
		p.t.Error("two policy calls at once")
	}
	return func() { p.inFlight.Add(-1) }
}

func (p *fakePolicy) Reset(context.Context) error {
	defer p.enter()()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resets++
	return p.resetErr
}

func (p *fakePolicy) Upscale(_ context.Context, granted Allocation) error {
	defer p.enter()()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upscales = append(p.upscales, granted)
	return p.upscaleErr
}

func (p *fakePolicy) Downscale(ctx context.Context, target Allocation) (bool, string, error) {
	defer p.enter()()
	p.mu.Lock()
	p.downscales = append(p.downscales, target)
	f := p.downscale
	p.mu.Unlock()
	if f == nil {
		return true, "ok", nil
	}
	return f(ctx, target)
}

func (p *fakePolicy) UpscaleRequests() <-chan struct{} { return p.reqs }

func (p *fakePolicy) counts() (resets, upscales, downscales int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets, len(p.upscales), len(p.downscales)
}

// logRecorder keeps the message and level of every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// has reports whether a record "LEVEL message" containing s was logged.
func (r *logRecorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if strings.Contains(rec, s) {
			return true
		}
	}
	return false
}

// waitFor polls cond (a log line or a count the server produces asynchronously) for
// up to 10 s; it is a bound for a test that would otherwise hang, not a timing check.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type testServer struct {
	url    string
	srv    *Server
	policy *fakePolicy
	logs   *logRecorder
}

// startServer runs a Server on a loopback TCP listener until the test ends, and
// checks that Serve then returns nil.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{logs: &logRecorder{}}
	if cfg.Policy == nil {
		ts.policy = newFakePolicy(t)
		cfg.Policy = ts.policy
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(ts.logs)
	}
	ts.srv = New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.url = "ws://" + ln.Addr().String() + Path
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// dial connects a test agent and closes it when the test ends.
func (ts *testServer) dial(t testing.TB, opts agenttest.Options) *agenttest.Agent {
	t.Helper()
	a, err := agenttest.Dial(context.Background(), ts.url, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// waitDone waits for the agent's connection to end and returns why.
func waitDone(t testing.TB, a *agenttest.Agent) error {
	t.Helper()
	select {
	case <-a.Done():
		return a.Err()
	case <-time.After(20 * time.Second):
		t.Fatal("the connection did not end")
		return nil
	}
}

var errFake = errors.New("fake failure")

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustListen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
