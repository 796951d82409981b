package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
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
	d, w, n := testDeps(t, cfg)
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
	started, stillRunning := r.s.tasks.counts()
	if started != 4 || stillRunning != 0 {
		t.Errorf("goroutines: %d started, %d still running after Serve returned; want 4 and 0", started, stillRunning)
	}
	if n := r.waker.Open(); n != 0 {
		t.Errorf("%d subscriptions still open: the JWKS watcher was not joined", n)
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

func TestServeInstallsJWKSFromStateDir(t *testing.T) {
	priv, jwks, _ := keys(t)
	cfg := testConfig(t) // no config file: every token refused at first
	r := start(t, cfg)
	tok := token(t, priv, "c1")
	if code, _ := get(t, r.ext+"/status", tok); code != http.StatusUnauthorized {
		t.Fatalf("token accepted without keys: %d", code)
	}
	if err := os.WriteFile(paths.JWKSFile(cfg.StateDir), jwks, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waker.Notify()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := get(t, r.ext+"/status", tok)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the jwks of the state directory was not installed (%d)", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
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
		t.Error("the JWKS watcher was not joined")
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
