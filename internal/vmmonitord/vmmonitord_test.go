package vmmonitord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/vmmonitor"
	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// notes records what Run tells systemd.
type notes struct {
	mu    sync.Mutex
	ready []string
	stops int
	// readyc is closed at the first Ready.
	readyc chan struct{}
}

func newNotes() *notes { return &notes{readyc: make(chan struct{})} }

func (n *notes) Ready(status string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ready = append(n.ready, status)
	if len(n.ready) == 1 {
		close(n.readyc)
	}
	return nil
}

func (n *notes) Stopping() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stops++
	return nil
}

// okPolicy answers everything; it counts the resets.
type okPolicy struct {
	mu     sync.Mutex
	resets int
	reqs   chan struct{}
}

func (p *okPolicy) Reset(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resets++
	return nil
}
func (p *okPolicy) Upscale(context.Context, vmmonitor.Allocation) error { return nil }
func (p *okPolicy) Downscale(context.Context, vmmonitor.Allocation) (bool, string, error) {
	return true, "ok", nil
}
func (p *okPolicy) UpscaleRequests() <-chan struct{} { return p.reqs }

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func wsURL(ln net.Listener) string { return "ws://" + ln.Addr().String() + vmmonitor.Path }

// TestRunServesEveryListener: the agent is served on each listener (one connection at a
// time across them), READY=1 names them, and a stop closes them, stops the background
// tasks and says STOPPING=1.
func TestRunServesEveryListener(t *testing.T) {
	log, logs := newLog()
	a, b := listenTCP(t), listenTCP(t)
	n := newNotes()
	pol := &okPolicy{}
	bgStopped := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{
			Listeners: []net.Listener{a, b}, Policy: pol, Notifier: n, Log: log,
			Background: []func(context.Context){func(ctx context.Context) { <-ctx.Done(); close(bgStopped) }},
		})
	}()
	select {
	case <-n.readyc:
	case err := <-done:
		t.Fatalf("Run returned before READY: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no READY=1")
	}
	for _, ln := range []net.Listener{a, b} {
		if !strings.Contains(n.ready[0], ln.Addr().String()) {
			t.Errorf("READY status %q does not name %s", n.ready[0], ln.Addr())
		}
	}
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	first, err := agenttest.Dial(actx, wsURL(a), agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.HealthCheck(actx); err != nil {
		t.Fatalf("health check over the first listener: %v", err)
	}
	second, err := agenttest.Dial(actx, wsURL(b), agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.HealthCheck(actx); err != nil {
		t.Fatalf("health check over the second listener: %v", err)
	}
	select {
	case <-first.Done():
	case <-actx.Done():
		t.Fatal("the connection on the other listener was not replaced")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}
	select {
	case <-bgStopped:
	default:
		t.Error("Run returned before its background task stopped")
	}
	select {
	case <-second.Done():
	case <-time.After(10 * time.Second):
		t.Error("the agent connection outlived Run")
	}
	for _, ln := range []net.Listener{a, b} {
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Run returned", ln.Addr())
		}
	}
	if n.stops != 1 || len(n.ready) != 1 {
		t.Errorf("READY %d times, STOPPING %d times", len(n.ready), n.stops)
	}
	if pol.resets != 2 {
		t.Errorf("%d resets for two connections", pol.resets)
	}
	if !strings.Contains(logs.String(), "vm-monitor listening") {
		t.Errorf("no listening line:\n%s", logs)
	}
}

// failingListener accepts nothing: its Accept fails at once, for good.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

func TestRunListenerFails(t *testing.T) {
	log, _ := newLog()
	good := listenTCP(t)
	bad := failingListener{listenTCP(t)}
	bgStopped := make(chan struct{})
	err := Run(context.Background(), Deps{
		Listeners: []net.Listener{good, bad}, Policy: &okPolicy{}, Log: log,
		Background: []func(context.Context){func(ctx context.Context) { <-ctx.Done(); close(bgStopped) }},
	})
	if err == nil || !strings.Contains(err.Error(), "accept: broken") || errors.Is(err, ErrConfig) {
		t.Fatalf("Run with a failing listener: %v", err)
	}
	<-bgStopped
	if c, err := net.DialTimeout("tcp", good.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the good listener still accepts after Run returned")
	}
}

// TestRunFatal: an error on Fatal (the connection to systemd is lost) stops Run, which
// returns it, with the listeners closed and the background stopped.
func TestRunFatal(t *testing.T) {
	log, logs := newLog()
	ln := listenTCP(t)
	fatal := make(chan error, 1)
	n := newNotes()
	bgStopped := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Deps{
			Listeners: []net.Listener{ln}, Policy: &okPolicy{}, Notifier: n, Log: log, Fatal: fatal,
			Background: []func(context.Context){func(ctx context.Context) { <-ctx.Done(); close(bgStopped) }},
		})
	}()
	<-n.readyc
	lost := fmt.Errorf("set MemoryHigh of compute-postgres.service: %w", errors.New("the connection to systemd is lost"))
	fatal <- lost
	if err := <-done; err != lost {
		t.Fatalf("Run = %v, want %v", err, lost)
	}
	<-bgStopped
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Run returned")
	}
	if !strings.Contains(logs.String(), `level=ERROR msg=stopping err="set MemoryHigh of compute-postgres.service: the connection to systemd is lost"`) {
		t.Errorf("log:\n%s", logs)
	}
}

// TestRunNeedsAPolicy: without a policy Run refuses, and closes the listeners it was
// given.
func TestRunNeedsAPolicy(t *testing.T) {
	ln := listenTCP(t)
	if err := Run(context.Background(), Deps{Listeners: []net.Listener{ln}}); err == nil {
		t.Fatal("Run without a policy succeeded")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Run refused")
	}
}

func TestRunNeedsAListener(t *testing.T) {
	err := Run(context.Background(), Deps{Policy: &okPolicy{}})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Run without listeners: %v, want ErrConfig", err)
	}
}

func TestSettingsCheck(t *testing.T) {
	good := Settings{Autoscaling: "true", Addr: paths.DefaultVMMonitorAddr, VsockPort: paths.DefaultVMMonitorVsockPort,
		CgroupUnit: paths.DefaultVMMonitorCgroupUnit, Connstr: paths.DefaultConnstr, StateDir: t.TempDir()}
	if err := good.check(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*Settings)
		want string
	}{
		{"autoscaling off", func(s *Settings) { s.Autoscaling = paths.DefaultAutoscaling }, `AUTOSCALING is "false", not true: the vm-monitor runs only on autoscaled VMs`},
		{"autoscaling unset", func(s *Settings) { s.Autoscaling = "" }, `AUTOSCALING is "", not true`},
		{"autoscaling yes", func(s *Settings) { s.Autoscaling = "yes" }, `AUTOSCALING is "yes", not true`},
		{"no listener", func(s *Settings) { s.Addr, s.VsockPort = "", 0 }, "no listener"},
		{"no port", func(s *Settings) { s.Addr = "0.0.0.0" }, "not host:port"},
		{"bad port", func(s *Settings) { s.Addr = "0.0.0.0:http" }, "not host:port"},
		{"port too big", func(s *Settings) { s.Addr = ":70000" }, "not host:port"},
		{"unit without a type", func(s *Settings) { s.CgroupUnit = "compute-postgres" }, "cgroup-unit"},
		{"a target has no cgroup", func(s *Settings) { s.CgroupUnit = "compute.target" }, "cgroup-unit"},
		{"empty unit", func(s *Settings) { s.CgroupUnit = ".service" }, "cgroup-unit"},
		{"a path", func(s *Settings) { s.CgroupUnit = "/system.slice/x.service" }, "cgroup-unit"},
		{"bad connstr", func(s *Settings) { s.Connstr = "postgresql://a@b:notaport/x" }, "--connstr"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := good
			c.mod(&s)
			err := s.check()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("check: %v, want ErrConfig naming %q", err, c.want)
			}
			// Main refuses them before it binds or connects to anything.
			if err := Main(context.Background(), s, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrConfig) {
				t.Errorf("Main: %v, want ErrConfig", err)
			}
		})
	}
	for _, s := range []Settings{
		{Autoscaling: "true", Addr: "", VsockPort: 1, CgroupUnit: "a.scope", Connstr: "host=/tmp"},
		{Autoscaling: `"true"`, Addr: "[::1]:0", CgroupUnit: "x.slice", Connstr: "host=/tmp"},
	} {
		if err := s.check(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func TestListeners(t *testing.T) {
	log, logs := newLog()
	noVsock := func(uint32) (net.Listener, error) {
		return nil, errors.New("open /dev/vsock: no such file or directory")
	}
	var vsockLn net.Listener
	fakeVsock := func(port uint32) (net.Listener, error) {
		if port != 4242 {
			return nil, fmt.Errorf("port %d", port)
		}
		vsockLn = listenTCP(t) // stands in for a vsock listener: the caller only serves it
		return vsockLn, nil
	}
	closeAll := func(lns []net.Listener) {
		for _, ln := range lns {
			ln.Close()
		}
	}

	lns, err := listeners(Settings{Addr: "127.0.0.1:0", VsockPort: 4242}, noVsock, log)
	if err != nil || len(lns) != 1 || lns[0].Addr().Network() != "tcp" {
		t.Fatalf("TCP with a vsock that fails: %v %v", lns, err)
	}
	closeAll(lns)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "no vsock listener") {
		t.Errorf("no warning for the vsock listener:\n%s", logs)
	}

	if _, err := listeners(Settings{VsockPort: 4242}, noVsock, log); !errors.Is(err, ErrConfig) {
		t.Errorf("vsock only, failing: %v, want ErrConfig", err)
	}

	lns, err = listeners(Settings{Addr: "127.0.0.1:0", VsockPort: 4242}, fakeVsock, log)
	if err != nil || len(lns) != 2 || lns[1] != vsockLn {
		t.Fatalf("TCP and vsock: %v %v", lns, err)
	}
	closeAll(lns)

	lns, err = listeners(Settings{Addr: "127.0.0.1:0"}, func(uint32) (net.Listener, error) {
		t.Error("vsock opened with port 0")
		return nil, errors.New("no")
	}, log)
	if err != nil || len(lns) != 1 {
		t.Fatalf("TCP only: %v %v", lns, err)
	}
	defer closeAll(lns)

	// A TCP address in use is an error, not a configuration error: a restart may find it
	// free.
	_, err = listeners(Settings{Addr: lns[0].Addr().String()}, noVsock, log)
	if err == nil || errors.Is(err, ErrConfig) {
		t.Errorf("an address in use: %v", err)
	}
}

// TestDefaultPort: the packaged defaults are the protocol's port.
func TestDefaultPort(t *testing.T) {
	if paths.DefaultVMMonitorVsockPort != vmmonitor.DefaultPort || !strings.HasSuffix(paths.DefaultVMMonitorAddr, fmt.Sprintf(":%d", vmmonitor.DefaultPort)) {
		t.Errorf("paths defaults %s and %d, the agent dials %d", paths.DefaultVMMonitorAddr, paths.DefaultVMMonitorVsockPort, vmmonitor.DefaultPort)
	}
}

// TestAutoscalingOn: the generator's rule (internal/paths' generator test has the same
// cases for the script).
func TestAutoscalingOn(t *testing.T) {
	for v, want := range map[string]bool{
		"true": true, `"true"`: true, "'true'": true, "true ": true, "true\r": true, "true \t\r": true,
		"": false, "false": false, "yes": false, "1": false, "TRUE": false, "True": false, " true": false,
		`"true`: false, `"true'`: false, `"true "`: false, "true # on": false, "truex": false,
	} {
		if got := AutoscalingOn(v); got != want {
			t.Errorf("AutoscalingOn(%q) = %v, want %v", v, got, want)
		}
	}
}

// fakeSystemd answers the vm-monitor's systemd calls with the error set.
type fakeSystemd struct{ err error }

func (f fakeSystemd) ControlGroup(context.Context, string) (string, error) {
	return "/system.slice/compute-postgres.service", f.err
}
func (f fakeSystemd) SetMemoryHigh(context.Context, string, uint64) error { return f.err }

// TestLossWatchExplainsPolkitRefusal: systemd's refusal to set MemoryHigh= (a
// COMPUTE_VM_MONITOR_CGROUP_UNIT the polkit rule does not cover) is explained by one
// warning naming the unit and the rule, however often it happens; the error still
// reaches the caller, and other errors are not explained so.
func TestLossWatchExplainsPolkitRefusal(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	f := &fakeSystemd{err: errors.New("Unit other.service not loaded.")}
	w := newLossWatch(f, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := w.SetMemoryHigh(ctx, "other.service", 1); err != f.err {
		t.Errorf("SetMemoryHigh = %v", err)
	}
	if logs.Len() != 0 {
		t.Errorf("an ordinary error explained: %s", logs.String())
	}
	f.err = fmt.Errorf("set MemoryHigh of other.service: %w: %w", sysd.ErrAccessDenied, errors.New("Interactive authentication required."))
	for range 3 {
		if err := w.SetMemoryHigh(ctx, "other.service", 1); err != f.err {
			t.Errorf("SetMemoryHigh = %v", err)
		}
	}
	l := logs.String()
	if strings.Count(l, "level=WARN") != 1 || !strings.Contains(l, "unit=other.service") || !strings.Contains(l, PolkitRule) || !strings.Contains(l, "compute-postgres.service only") {
		t.Errorf("want one warning naming the unit and the rule, got:\n%s", l)
	}
}

// TestLossWatch: a lost connection to systemd, seen in any call, is reported once; other
// errors pass through and are not.
func TestLossWatch(t *testing.T) {
	ctx := context.Background()
	f := &fakeSystemd{err: errors.New("Unit compute-postgres.service not loaded.")}
	w := newLossWatch(f, slog.New(slog.DiscardHandler))
	if err := w.SetMemoryHigh(ctx, "compute-postgres.service", 1); err != f.err {
		t.Errorf("SetMemoryHigh = %v", err)
	}
	if _, err := w.ControlGroup(ctx, "compute-postgres.service"); err != f.err {
		t.Errorf("ControlGroup = %v", err)
	}
	select {
	case err := <-w.lost:
		t.Fatalf("an ordinary error reported as a lost connection: %v", err)
	default:
	}
	f.err = fmt.Errorf("control group of compute-postgres.service: %w: %w", sysd.ErrDisconnected, errors.New("dbus: connection closed by user"))
	if _, err := w.ControlGroup(ctx, "compute-postgres.service"); err != f.err {
		t.Errorf("ControlGroup = %v", err)
	}
	if err := w.SetMemoryHigh(ctx, "compute-postgres.service", 1); err != f.err {
		t.Errorf("SetMemoryHigh = %v", err)
	}
	select {
	case err := <-w.lost:
		if !errors.Is(err, sysd.ErrDisconnected) {
			t.Errorf("reported %v", err)
		}
	default:
		t.Fatal("the lost connection was not reported")
	}
	select {
	case err := <-w.lost:
		t.Errorf("reported twice: %v", err)
	default:
	}
}

// TestRunTrims: the start-up pages are given back TrimAfter after Run serves, and again
// TrimAfter after an agent connection's handshake (the wait restarts with each
// connection); nothing after Run returned.
func TestRunTrims(t *testing.T) {
	log, _ := newLog()
	ln := listenTCP(t)
	trims := make(chan time.Time, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	const after = 300 * time.Millisecond
	go func() {
		done <- Run(ctx, Deps{Listeners: []net.Listener{ln}, Policy: &okPolicy{}, Log: log,
			Trim: func() { trims <- time.Now() }, TrimAfter: after})
	}()
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after the start")
	}
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	connected := time.Now()
	agent, err := agenttest.Dial(actx, wsURL(ln), agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.HealthCheck(actx); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-trims:
		if at.Sub(connected) < after {
			t.Errorf("trimmed %s after the connection, before TrimAfter (%s)", at.Sub(connected), after)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after an agent connection")
	}
	// A connection, then a stop before TrimAfter: no trim after Run returned.
	if _, err := agenttest.Dial(actx, wsURL(ln), agenttest.Options{}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-trims:
		t.Error("a trim after Run returned")
	case <-time.After(2 * after):
	}
}
