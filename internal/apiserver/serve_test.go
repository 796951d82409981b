package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/computetools/compute-tools/internal/sysd"
)

// fakeNotify records sd_notify calls.
type fakeNotify struct {
	ready    chan string
	stopping chan struct{}
}

func newFakeNotify() *fakeNotify {
	return &fakeNotify{ready: make(chan string, 1), stopping: make(chan struct{}, 1)}
}

func (n *fakeNotify) Ready(status string) error { n.ready <- status; return nil }
func (n *fakeNotify) Stopping() error           { n.stopping <- struct{}{}; return nil }

// running is a Serve in progress.
type running struct {
	s        *server
	waker    *statetest.Waker
	notify   *fakeNotify
	ext, int string // base URLs
	cancel   context.CancelFunc
	errc     chan error
}

func testConfig(t *testing.T) Settings {
	return Settings{StateDir: t.TempDir(), ConfigFile: filepath.Join(t.TempDir(), "none.json"), ComputeID: "c1",
		ExternalAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", PGBin: "/nonexistent/postgres", TLSPoll: 5 * time.Millisecond}
}

func testDeps(t *testing.T, cfg Settings) (Deps, *statetest.Waker, *fakeNotify) {
	store, err := state.Open(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	w, n := &statetest.Waker{}, newFakeNotify()
	return Deps{Store: store, Bus: w, Systemd: &fakeSystemd{}, Notify: n, Logger: quiet()}, w, n
}

func start(t *testing.T, cfg Settings) *running {
	t.Helper()
	return startWith(t, cfg, nil)
}

// startWith is start with the deps changed by with (may be nil) first.
func startWith(t *testing.T, cfg Settings, with func(*Deps, *statetest.Waker)) *running {
	t.Helper()
	d, w, n := testDeps(t, cfg)
	if with != nil {
		with(&d, w)
	}
	var addrs []string
	d.Listen = func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err == nil {
			addrs = append(addrs, "http://"+ln.Addr().String())
		}
		return ln, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: newServer(cfg, d), waker: w, notify: n, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- r.s.serve(ctx) }()
	select {
	case status := <-n.ready:
		if !strings.HasPrefix(status, "serving on 127.0.0.1:") {
			t.Errorf("READY status %q", status)
		}
	case err := <-r.errc:
		t.Fatalf("serve ended before READY: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no READY")
	}
	r.ext, r.int = addrs[0], addrs[1]
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	return r
}

// stop cancels the run and checks that Serve returned only after every goroutine it
// started had stopped.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	r.errc <- nil // for the cleanup
	// The TLS watcher, the post-termination watcher, the reconciliation and the two
	// servers, and the JWKS fetch with a control plane.
	want := 5
	if r.s.cfg.ControlPlaneURI != "" {
		want = 6
	}
	started, stillRunning := r.s.tasks.counts()
	if started != want || stillRunning != 0 {
		t.Errorf("goroutines: %d started, %d still running after Serve returned; want %d and 0", started, stillRunning, want)
	}
	if n := r.waker.Open(); n != 0 {
		t.Errorf("%d subscriptions still open: a watcher was not joined", n)
	}
	select {
	case <-r.notify.stopping:
	default:
		t.Error("no STOPPING=1")
	}
}

func get(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	// Every answer is checked against api/openapi.yaml (the external port's part).
	client := &http.Client{Transport: openapitest.Load(t).Transport(t, openapitest.External, nil)}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	priv, _, cfgFile := keys(t)
	cfg := testConfig(t)
	cfg.ConfigFile = cfgFile
	r := start(t, cfg)

	code, body := get(t, r.ext+"/status", token(t, priv, "c1"))
	var st struct{ Status string }
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Status != "empty" {
		t.Errorf("GET /status: %d %s", code, body)
	}
	if code, _ := get(t, r.ext+"/status", token(t, priv, "other")); code != http.StatusForbidden {
		t.Errorf("GET /status for another compute: %d", code)
	}
	resp, err := http.Post(r.int+"/extension_server/foo.so?is_library=true", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("/extension_server without a gateway: %d, want 412", resp.StatusCode)
	}
	r.stop(t)
	if _, err := http.Get(r.ext + "/metrics"); err == nil {
		t.Error("the external port still answers after Serve returned")
	}
}

// TestServeIgnoresPlantedJWKS: a key set that the postgres user leaves in the state
// directory (it may write there) must never verify tokens; only the config file's keys
// or the control plane's do.
func TestServeIgnoresPlantedJWKS(t *testing.T) {
	priv, jwks, _ := keys(t)
	cfg := testConfig(t) // no config file, no control plane: every token refused
	r := start(t, cfg)
	tok := token(t, priv, "c1")
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "jwks.json"), jwks, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waker.Notify()
	// A status change wakes every watcher; a second request after it still fails.
	for range 2 {
		if code, _ := get(t, r.ext+"/status", tok); code != http.StatusUnauthorized {
			t.Fatalf("a token signed by a key set planted in the state directory: %d, want 401", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop(t)
}

// TestServeFetchesJWKSFromControlPlane: with a control plane, compute-api asks it for the
// key set itself (with the token, counted in compute_ctl_cplane_requests_total).
func TestServeFetchesJWKSFromControlPlane(t *testing.T) {
	priv, jwks, _ := keys(t)
	var mu sync.Mutex
	var auths []string
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		auths = append(auths, req.URL.Path+" "+req.Header.Get("Authorization"))
		n := len(auths)
		mu.Unlock()
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"empty","spec":null,"compute_ctl_config":{"jwks":` + string(jwks) + `}}`))
	}))
	defer cp.Close()
	cfg := testConfig(t)
	cfg.ControlPlaneURI, cfg.ControlPlaneToken = cp.URL, "cp-token"
	r := start(t, cfg)
	tok := token(t, priv, "c1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(t, r.ext+"/status", tok)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control plane's key set was not installed (%d)", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
	mu.Lock()
	defer mu.Unlock()
	for _, a := range auths {
		if a != "/compute/api/v2/computes/c1/spec Bearer cp-token" {
			t.Errorf("control plane request %q", a)
		}
	}
}

func TestServeWaitsForTheNewLifecycle(t *testing.T) {
	cfg := testConfig(t)
	d, w, n := testDeps(t, cfg)
	d.Systemd = &fakeSystemd{pending: true, inv: "inv-7"}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, cfg, d) }()
	select {
	case <-n.ready:
		t.Fatal("READY before compute-init began the new lifecycle")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := d.Store.Update(func(r *state.Record) error { r.InitInvocation = "inv-7"; return nil }); err != nil {
		t.Fatal(err)
	}
	w.Notify()
	select {
	case <-n.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("no READY after the lifecycle began")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestServeListenFailure(t *testing.T) {
	cfg := testConfig(t)
	d, w, n := testDeps(t, cfg)
	var ext net.Listener
	d.Listen = func(network, address string) (net.Listener, error) {
		if ext == nil {
			var err error
			ext, err = net.Listen(network, address)
			return ext, err
		}
		return nil, errors.New("address in use")
	}
	s := newServer(cfg, d)
	err := s.serve(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "listen on the internal port:") {
		t.Fatalf("error %v", err)
	}
	if _, err := ext.Accept(); err == nil {
		t.Error("the external listener is left open")
	}
	if started, stillRunning := s.tasks.counts(); started != 2 || stillRunning != 0 {
		t.Errorf("watchers: %d started, %d still running after serve returned", started, stillRunning)
	}
	if w.Open() != 0 {
		t.Error("a watcher was not joined")
	}
	select {
	case <-n.ready:
		t.Error("READY although a port failed")
	default:
	}
}

func TestServeBadGatewayURL(t *testing.T) {
	cfg := testConfig(t)
	cfg.RemoteExtBaseURL = "not a url"
	d, _, _ := testDeps(t, cfg)
	s := newServer(cfg, d)
	if err := s.serve(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "--remote-ext-base-url:") {
		t.Errorf("error %v", err)
	}
	if started, _ := s.tasks.counts(); started != 0 {
		t.Errorf("%d goroutines started before the settings were checked", started)
	}
}

// TestServeReconcilesAtStart: a record left termination_pending by a compute-api killed
// halfway through /terminate is finished by the next one (control.Reconcile).
func TestServeReconcilesAtStart(t *testing.T) {
	cfg := testConfig(t)
	d, _, n := testDeps(t, cfg)
	f := &fakeSystemd{active: "active"}
	d.Systemd = f
	statetest.MustSet(t, d.Store, state.Running, func(r *state.Record) { r.Storage, r.Mode = "standalone", "primary" })
	if _, _, err := d.Store.BeginTermination(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, cfg, d) }()
	<-n.ready
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	rec, err := d.Store.Wait(wctx, nil, 10*time.Millisecond, func(r state.Record) bool { return r.Status != state.TerminationPendingFast })
	if err != nil || rec.Status != state.Terminated {
		t.Errorf("status %s %v, want terminated", rec.Status, err)
	}
	if !strings.Contains(f.got(), "stop compute-postgres.service") {
		t.Errorf("unit calls %s: postgres not stopped", f.got())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// A lost bus connection ends Serve with an error that says why (systemd then restarts
// compute-api, which connects again).
func TestServeEndsWhenTheBusIsLost(t *testing.T) {
	cfg := testConfig(t)
	d, _, n := testDeps(t, cfg)
	lost := make(chan struct{})
	d.BusLost = lost
	errc := make(chan error, 1)
	go func() { errc <- Serve(context.Background(), cfg, d) }()
	select {
	case <-n.ready:
	case err := <-errc:
		t.Fatalf("serve ended before READY: %v", err)
	}
	close(lost)
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "connection to the system bus is lost") {
			t.Fatalf("serve ended with %v, want the lost bus", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve goes on without its bus")
	}
}

// A call to systemd that fails because the connection is lost is reported once on the
// watch's channel, with the call's error; other errors are not.
func TestLossWatch(t *testing.T) {
	lost := make(chan error, 1)
	f := &fakeSystemd{errAlways: errors.New("job failed")}
	w := lossWatch{units{f}, lost}
	if err := w.Reconfigure(context.Background()); err == nil {
		t.Fatal("no error")
	}
	select {
	case err := <-lost:
		t.Fatalf("an ordinary error reported as a lost connection: %v", err)
	default:
	}
	f.errAlways = fmt.Errorf("restart x: %w: closed", sysd.ErrDisconnected)
	for range 2 {
		if err := w.StopPostgres(context.Background(), false); !errors.Is(err, sysd.ErrDisconnected) {
			t.Fatalf("error %v, want it passed through", err)
		}
	}
	select {
	case err := <-lost:
		if !errors.Is(err, sysd.ErrDisconnected) {
			t.Fatalf("reported %v", err)
		}
	default:
		t.Fatal("the lost connection was not reported")
	}
}

// TestServePostTerminationAction: with COMPUTE_ON_TERMINATED=stop, an immediate
// /terminate of a running compute is followed at once (no linger) by a stop of
// compute.target through systemd.
func TestServePostTerminationAction(t *testing.T) {
	priv, _, cfgFile := keys(t)
	cfg := testConfig(t)
	cfg.ConfigFile = cfgFile
	cfg.OnTerminated = control.EndStop
	sd := &fakeSystemd{}
	r := startWith(t, cfg, func(d *Deps, w *statetest.Waker) {
		d.Store.OnChange = func(state.Record) { w.Notify() }
		d.Systemd = sd
	})
	store := r.s.d.Store
	if _, err := statetest.Reset(store); err != nil {
		t.Fatal(err)
	}
	if _, err := store.BeginInit(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.MarkRunning(nil); err != nil {
		t.Fatal(err)
	}
	admin, err := auth.MintToken(priv, auth.TokenClaims{Admin: true, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", r.ext+"/terminate?mode=immediate", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/terminate: %d", resp.StatusCode)
	}
	for !strings.Contains(sd.got(), "queue stop compute.target") {
		time.Sleep(5 * time.Millisecond) // bounded by the test's deadline
	}
	// pgbouncer and local_proxy first (not running here), then Postgres.
	if got := sd.got(); got != "active? pgbouncer.service,active? local_proxy.service,stop compute-postgres.service,queue stop compute.target" {
		t.Errorf("systemd calls %s", got)
	}
	r.stop(t)
}
