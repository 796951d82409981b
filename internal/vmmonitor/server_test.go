package vmmonitor

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

var bg = context.Background()

func TestHandshake(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	if a.Version != 1 {
		t.Fatalf("negotiated version %d, want 1", a.Version)
	}
	// A range that reaches v1.0 from below or above is fine too.
	b := ts.dial(t, agenttest.Options{MinVersion: 1, MaxVersion: 3})
	if b.Version != 1 {
		t.Fatalf("negotiated version %d, want 1", b.Version)
	}
}

// The reference overflows its stack formatting an unsupported version; we answer
// {"error"} and go on serving.
func TestHandshakeRefusedThenGoodConnection(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range []struct {
		min, max uint32
		want     string
	}{
		{2, 2, "received protocol version range <unknown: 2> which does not overlap with v1.0"},
		{2, 1, "min version = <unknown: 2> is greater than max version = v1.0"},
	} {
		_, err := agenttest.Dial(bg, ts.url, agenttest.Options{MinVersion: tc.min, MaxVersion: tc.max})
		var he *agenttest.HandshakeError
		if !errors.As(err, &he) || he.Text != tc.want {
			t.Fatalf("range %d-%d: error %v, want the monitor's %q", tc.min, tc.max, err, tc.want)
		}
	}
	a := ts.dial(t, agenttest.Options{})
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("health check after refused handshakes: %v", err)
	}
	if resets, _, _ := ts.policy.counts(); resets != 1 {
		t.Errorf("policy reset %d times, want 1 (refused handshakes do not reset)", resets)
	}
}

// rawDial opens a WebSocket to the server without any handshake of its own.
func rawDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(bg, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func TestHandshakeBadFirstFrames(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		data string
		want string
	}{
		{"garbage", websocket.MessageText, "hello", `{"error":"decode protocol version range: not a JSON object`},
		{"binary", websocket.MessageBinary, `{"min":1,"max":1}`, `{"error":"received a MessageBinary frame as the protocol version range, not text"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, ts.url)
			if err := c.Write(bg, tc.typ, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(bg)
			if err != nil || !strings.HasPrefix(string(got), tc.want) {
				t.Fatalf("answer %s, %v; want %s", got, err, tc.want)
			}
			_, _, err = c.Read(bg)
			if websocket.CloseStatus(err) != websocket.StatusProtocolError {
				t.Fatalf("after the answer: %v, want close status 1002", err)
			}
		})
	}
}

// A client that never sends its range is dropped at the handshake bound.
func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, Config{HandshakeTimeout: 50 * time.Millisecond})
	c := rawDial(t, ts.url)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("read: %v (ctx %v); want the server to drop the connection", err, ctx.Err())
	}
	waitFor(t, "the handshake failure log", func() bool { return ts.logs.has("WARN agent handshake failed") })
}

func TestOnlyMonitorPath(t *testing.T) {
	ts := startServer(t, Config{})
	base := "http" + strings.TrimSuffix(strings.TrimPrefix(ts.url, "ws"), Path)
	for path, want := range map[string]int{"/": 404, "/monitorx": 404, "/other": 404, Path: 426} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// Path answers a plain GET with 426 Upgrade Required: only a WebSocket upgrade is served.
}

// Health checks the agent's way, every interval (5 s in the agent; short here), each
// answered with its own id.
func TestHealthChecks(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	results := a.HealthChecks(bg, 5*time.Millisecond)
	for i := range 5 {
		if err := <-results; err != nil {
			t.Fatalf("health check %d: %v", i, err)
		}
	}
	select {
	case m := <-a.InvalidMessages():
		t.Fatalf("monitor sent InvalidMessage %s", m.Raw)
	default:
	}
}

func TestUpscaleNotification(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	if err := a.NotifyUpscale(bg, 2, 8<<30); err != nil {
		t.Fatalf("upscale: %v", err)
	}
	ts.policy.mu.Lock()
	got := ts.policy.upscales
	ts.policy.mu.Unlock()
	if len(got) != 1 || got[0] != (Allocation{CPU: 2, Mem: 8 << 30}) {
		t.Fatalf("policy got %v", got)
	}

	ts.policy.set(func(p *fakePolicy) { p.upscaleErr = errFake })
	err := a.NotifyUpscale(bg, 3, 12<<30)
	var ie *agenttest.InternalError
	if !errors.As(err, &ie) || ie.Text != "handle upscale: fake failure" {
		t.Fatalf("failed upscale: %v, want InternalError", err)
	}
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("after an internal error: %v", err)
	}
}

func TestDownscaleRequest(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	for _, tc := range []struct {
		ok     bool
		status string
		err    error
	}{
		{true, "set cgroup memory threshold from 3400 MiB to 1615 MiB", nil},
		{false, "calculated memory threshold too low", nil}, // a denial is an answer
		{false, "", errFake},
	} {
		ts.policy.set(func(p *fakePolicy) {
			p.downscale = func(context.Context, Allocation) (bool, string, error) { return tc.ok, tc.status, tc.err }
		})
		ok, status, err := a.RequestDownscale(bg, 0.5, 2<<30)
		if tc.err != nil {
			var ie *agenttest.InternalError
			if !errors.As(err, &ie) || ie.Text != "downscale: fake failure" {
				t.Fatalf("error %v, want InternalError", err)
			}
			continue
		}
		if err != nil || ok != tc.ok || status != tc.status {
			t.Fatalf("got %v %q %v; want %v %q", ok, status, err, tc.ok, tc.status)
		}
	}
	ts.policy.mu.Lock()
	defer ts.policy.mu.Unlock()
	if len(ts.policy.downscales) != 3 || ts.policy.downscales[0] != (Allocation{CPU: 0.5, Mem: 2 << 30}) {
		t.Fatalf("policy got %v", ts.policy.downscales)
	}
}

// A health check is answered while a decision is under way (the reference answers it
// after the decision).
func TestHealthCheckDuringSlowDownscale(t *testing.T) {
	ts := startServer(t, Config{})
	entered, release := make(chan struct{}), make(chan struct{})
	ts.policy.set(func(p *fakePolicy) {
		p.downscale = func(context.Context, Allocation) (bool, string, error) {
			close(entered)
			<-release
			return true, "done", nil
		}
	})
	a := ts.dial(t, agenttest.Options{})
	res := make(chan error, 1)
	go func() {
		_, _, err := a.RequestDownscale(bg, 1, 1<<30)
		res <- err
	}()
	<-entered
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("health check during a downscale: %v", err)
	}
	close(release)
	if err := <-res; err != nil {
		t.Fatalf("downscale: %v", err)
	}
}

// A new connection replaces the old one, which is closed with 1000 and a reason; the
// policy is reset for each.
func TestReplacedConnection(t *testing.T) {
	ts := startServer(t, Config{})
	a1 := ts.dial(t, agenttest.Options{})
	if err := a1.HealthCheck(bg); err != nil {
		t.Fatal(err)
	}
	a2 := ts.dial(t, agenttest.Options{})
	err := waitDone(t, a1)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "replaced by a newer connection" {
		t.Fatalf("old connection ended with %v", err)
	}
	if err := a2.HealthCheck(bg); err != nil {
		t.Fatalf("new connection: %v", err)
	}
	if resets, _, _ := ts.policy.counts(); resets != 2 {
		t.Errorf("policy reset %d times, want 2", resets)
	}
}

// The old connection's decision is cancelled when it is replaced; the new connection's
// Reset comes only after it returned (the fake fails on overlapping calls).
func TestReplacementCancelsPolicyCall(t *testing.T) {
	ts := startServer(t, Config{})
	entered, cancelled := make(chan struct{}), make(chan error, 1)
	ts.policy.set(func(p *fakePolicy) {
		p.downscale = func(ctx context.Context, _ Allocation) (bool, string, error) {
			close(entered)
			<-ctx.Done()
			cancelled <- ctx.Err()
			return false, "", ctx.Err()
		}
	})
	a1 := ts.dial(t, agenttest.Options{ResponseTimeout: time.Minute})
	res := make(chan error, 1)
	go func() {
		_, _, err := a1.RequestDownscale(bg, 1, 1<<30)
		res <- err
	}()
	<-entered
	a2 := ts.dial(t, agenttest.Options{})
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("old decision's ctx: %v", err)
	}
	if err := <-res; err == nil {
		t.Fatal("the replaced connection's downscale was answered")
	}
	if err := a2.HealthCheck(bg); err != nil {
		t.Fatal(err)
	}
}

// An agent that vanishes mid-request: the decision's ctx ends, nothing is answered,
// and the next agent is served.
func TestAgentVanishesMidRequest(t *testing.T) {
	ts := startServer(t, Config{})
	entered, cancelled := make(chan struct{}), make(chan error, 1)
	ts.policy.set(func(p *fakePolicy) {
		p.downscale = func(ctx context.Context, _ Allocation) (bool, string, error) {
			close(entered)
			<-ctx.Done()
			cancelled <- ctx.Err()
			return false, "", ctx.Err()
		}
	})
	a1 := ts.dial(t, agenttest.Options{})
	if _, err := a1.Send(bg, "DownscaleRequest", map[string]any{"target": map[string]any{"cpu": 1, "mem": 1 << 30}}); err != nil {
		t.Fatal(err)
	}
	<-entered
	a1.Vanish()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("decision's ctx: %v", err)
	}
	waitFor(t, "the unanswered downscale log", func() bool {
		return ts.logs.has("WARN connection ended during the downscale; not answered")
	})
	ts.policy.set(func(p *fakePolicy) { p.downscale = nil })
	a2 := ts.dial(t, agenttest.Options{})
	if ok, _, err := a2.RequestDownscale(bg, 1, 1<<30); err != nil || !ok {
		t.Fatalf("next agent's downscale: %v %v", ok, err)
	}
}

// A text frame that does not decode drops the connection (as the reference's does),
// with 1002; the server goes on serving.
func TestGarbageFrames(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range []struct {
		name, frame string
		invalid     bool // an InvalidMessage answers first, when the id could be read
	}{
		{"not json", "}{ not json", false},
		{"no id", `{"type":"HealthCheck","content":{}}`, false},
		{"bad content", `{"type":"DownscaleRequest","id":2,"content":{"target":{"cpu":1,"mem":"lots"}}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ts.dial(t, agenttest.Options{})
			if err := a.SendRaw(bg, websocket.MessageText, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			err := waitDone(t, a)
			if websocket.CloseStatus(err) != websocket.StatusProtocolError {
				t.Fatalf("connection ended with %v, want close status 1002", err)
			}
			select {
			case m := <-a.InvalidMessages():
				if !tc.invalid || m.ID != 2 || !strings.Contains(string(m.Raw), `field \"mem\"`) {
					t.Fatalf("InvalidMessage %s", m.Raw)
				}
			default:
				if tc.invalid {
					t.Fatal("no InvalidMessage before the close")
				}
			}
		})
	}
	a := ts.dial(t, agenttest.Options{})
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
	if !ts.logs.has("WARN undecodable message from the agent") {
		t.Error("no warning for the undecodable frames")
	}
}

// A binary frame is ignored with a warning, as the reference does; the connection
// goes on.
func TestBinaryFrameIgnored(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	if err := a.SendRaw(bg, websocket.MessageBinary, []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("after a binary frame: %v", err)
	}
	if !ts.logs.has("WARN agent sent a non-text frame; ignored") {
		t.Error("no warning for the binary frame")
	}
}

// A message of unknown type is answered with InvalidMessage (the agent's rule) and the
// connection goes on.
func TestUnknownMessageType(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	for _, typ := range []string{"Bogus", "UpscaleRequest", "DownscaleResult"} {
		_, err := a.Call(bg, typ, map[string]any{})
		var im *agenttest.InvalidMessageError
		if !errors.As(err, &im) || im.Text != `received message of unknown type: "`+typ+`"` {
			t.Fatalf("%s: %v, want InvalidMessage", typ, err)
		}
	}
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("after unknown types: %v", err)
	}
}

// The agent's InvalidMessage and InternalError are logged, not answered.
func TestAgentErrorsLogged(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.dial(t, agenttest.Options{})
	if _, err := a.Send(bg, "InvalidMessage", map[string]string{"error": "Received HealthCheck with id 3 but id is unknown"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(bg, "InternalError", map[string]string{"error": "agent broke"}); err != nil {
		t.Fatal(err)
	}
	// Handled in order: once the health check is answered, both were read.
	if err := a.HealthCheck(bg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"WARN agent says a message we sent was invalid", "WARN agent reports an internal error"} {
		if !ts.logs.has(want) {
			t.Errorf("no log %q", want)
		}
	}
}

func TestResetFailureClosesConnection(t *testing.T) {
	ts := startServer(t, Config{})
	ts.policy.set(func(p *fakePolicy) { p.resetErr = errFake })
	a := ts.dial(t, agenttest.Options{})
	err := waitDone(t, a)
	if websocket.CloseStatus(err) != websocket.StatusInternalError {
		t.Fatalf("connection ended with %v, want 1011", err)
	}
}

// fakeClock is the injected clock of the upscale request rate limit.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// At most one UpscaleRequest per second, with odd ids from 3. After each signal an
// UpscaleNotification goes through the same work loop: its confirmation comes after
// the signal was handled (sent or dropped) and after any request that made.
func TestUpscaleRequestRateLimit(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	ts := startServer(t, Config{Now: clock.Now})
	a := ts.dial(t, agenttest.Options{})
	signal := func(a *agenttest.Agent) []uint64 {
		ts.policy.reqs <- struct{}{}
		if err := a.NotifyUpscale(bg, 4, 16<<30); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for len(a.UpscaleRequests()) > 0 {
			got = append(got, <-a.UpscaleRequests())
		}
		return got
	}
	for i, step := range []struct {
		advance time.Duration
		want    []uint64
	}{
		{0, []uint64{3}},
		{0, nil},
		{999 * time.Millisecond, nil},
		{time.Millisecond, []uint64{5}}, // 1 s after the first
		{500 * time.Millisecond, nil},
		{3 * time.Second, []uint64{7}},
		{0, nil},
	} {
		clock.Advance(step.advance)
		if got := signal(a); !equal(got, step.want) {
			t.Fatalf("step %d: upscale request ids %v, want %v", i, got, step.want)
		}
	}

	// The next connection has its own ids and limit.
	b := ts.dial(t, agenttest.Options{})
	waitDone(t, a)
	if got := signal(b); !equal(got, []uint64{3}) {
		t.Fatalf("new connection's upscale request ids %v, want [3]", got)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Serve returns nil when its ctx ends, having closed the agent's connection with 1001.
func TestServeStops(t *testing.T) {
	p := newFakePolicy(t)
	srv := New(Config{Policy: p, Logger: slogDiscard()})
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	a, err := agenttest.Dial(bg, "ws://"+ln.Addr().String()+Path, agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// An established connection (a stop during the handshake may drop it without a
	// close frame).
	if err := a.HealthCheck(bg); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := waitDone(t, a); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("agent connection ended with %v, want 1001", err)
	}
	if _, err := agenttest.Dial(bg, "ws://"+ln.Addr().String()+Path, agenttest.Options{ConnectTimeout: time.Second}); err == nil {
		t.Fatal("dial after Serve returned succeeded")
	}
}

// One Server on two listeners keeps one connection across both.
func TestTwoListenersOneConnection(t *testing.T) {
	p := newFakePolicy(t)
	srv := New(Config{Policy: p, Logger: slogDiscard()})
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	var urls []string
	for range 2 {
		ln := mustListen(t)
		urls = append(urls, "ws://"+ln.Addr().String()+Path)
		wg.Go(func() {
			if err := srv.Serve(ctx, ln); err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	a, err := agenttest.Dial(bg, urls[0], agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := agenttest.Dial(bg, urls[1], agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, a); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("first connection ended with %v", err)
	}
	if err := b.HealthCheck(bg); err != nil {
		t.Fatal(err)
	}
}
