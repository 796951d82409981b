package initcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/bus/bustest"
	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

func testHost(t *testing.T) Host {
	return Host{StateDir: t.TempDir(), ConfigFile: "/etc/compute/config.json", PGData: "/pgdata", PGBin: "/pg/bin/postgres",
		Connstr: "postgresql://cloud_admin@localhost:55432/postgres", ComputeID: "c1", PrivilegedRole: "neon_superuser",
		InternalHTTPPort: 3081, ControlPlaneURI: "http://cplane", ControlPlaneToken: "tok"}
}

func TestHostConfig(t *testing.T) {
	h := testHost(t)
	h.RemoteExtBaseURL = "http://gw.example:8080"
	h.RemoteExtAllowHTTP = true
	h.PgbouncerIni, h.PgbouncerConnstr, h.PgbouncerPassword = "/pgb.ini", "host=/tmp", "pw"
	h.LocalProxyConfig, h.LocalProxyPidFile = "/lp/config.json", "/lp/pid"
	cfg, err := h.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := compute.Settings{StateDir: h.StateDir, ConfigFile: h.ConfigFile, PGData: "/pgdata", PGBin: "/pg/bin/postgres",
		Connstr: h.Connstr, PrivilegedRole: "neon_superuser", ControlPlaneURI: "http://cplane", ComputeID: "c1",
		ControlPlaneToken: "tok", RemoteExtBaseURL: "http://gw.example:8080/", OSUser: paths.DefaultPGUser, InternalHTTPPort: 3081,
		PgbouncerIni: "/pgb.ini", PgbouncerConnstr: "host=/tmp", PgbouncerPassword: "pw",
		LocalProxyConfig: "/lp/config.json", LocalProxyPidFile: "/lp/pid", LocalProxyUnit: paths.UnitLocalProxy}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config\n got %+v\nwant %+v", cfg, want)
	}
	h.RemoteExtBaseURL = ""
	if cfg, err := h.Config(); err != nil || cfg.RemoteExtBaseURL != "" {
		t.Errorf("without a gateway: %q, %v", cfg.RemoteExtBaseURL, err)
	}
}

func TestHostConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Host)
		want string
	}{
		{"role with capitals", func(h *Host) { h.PrivilegedRole = "Neon" }, `--privileged-role-name "Neon" must match`},
		{"empty role", func(h *Host) { h.PrivilegedRole = "" }, `--privileged-role-name "" must match`},
		{"relative gateway", func(h *Host) { h.RemoteExtBaseURL = "gw/path" }, "--remote-ext-base-url:"},
		{"plain http gateway without the opt-in", func(h *Host) { h.RemoteExtBaseURL = "http://gw.example" }, "--remote-ext-allow-http"},
	} {
		h := testHost(t)
		tc.edit(&h)
		if _, err := h.Config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// fakeBus records announcements and hands out wake-up subscriptions.
type fakeBus struct {
	mu       sync.Mutex
	emitted  []string
	closed   bool
	wake     chan struct{}
	canceled bool
}

func (b *fakeBus) Subscribe() (<-chan struct{}, func()) {
	return b.wake, func() { b.mu.Lock(); b.canceled = true; b.mu.Unlock() }
}

func (b *fakeBus) EmitStatusChanged(status string, seq uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emitted = append(b.emitted, status)
	if b.wake != nil {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (b *fakeBus) Close() { b.mu.Lock(); b.closed = true; b.mu.Unlock() }

// fakeManager is a systemd connection that answers one unit's timestamps.
type fakeManager struct {
	start, active time.Time
	closed        bool
	started       []string
}

func (m *fakeManager) UnitTimestamps(ctx context.Context, name string) (time.Time, time.Time, error) {
	if name != paths.UnitPostgres {
		return time.Time{}, time.Time{}, errors.New("no such unit")
	}
	return m.start, m.active, nil
}

func (m *fakeManager) ActiveState(context.Context, string) (string, error) { return "inactive", nil }
func (m *fakeManager) ReloadUnit(context.Context, string) error {
	return errors.New("fakeManager: no reload")
}
func (m *fakeManager) StopUnit(context.Context, string) error {
	return errors.New("fakeManager: no stop")
}
func (m *fakeManager) StartUnit(ctx context.Context, name string) error {
	m.started = append(m.started, name)
	return nil
}

func (m *fakeManager) RestartUnit(context.Context, string) error {
	return errors.New("fakeManager: no restart")
}

func (m *fakeManager) Close() { m.closed = true }

func quietEnv(b *fakeBus, m *fakeManager, dialErr error) env {
	return env{
		connectBus: func(context.Context) (busConn, error) {
			if b == nil {
				return nil, errors.New("no bus here")
			}
			return b, nil
		},
		dialSystemd: func(context.Context) (unitManager, error) {
			if dialErr != nil {
				return nil, dialErr
			}
			return m, nil
		},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestDepsAnnounceStatusChanges(t *testing.T) {
	b := &fakeBus{}
	d, done, err := quietEnv(b, nil, nil).deps(context.Background(), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	if d.Waker == nil || d.Units != nil {
		t.Fatalf("waker %v units %v: want the bus and no units", d.Waker, d.Units)
	}
	if _, err := statetest.Set(d.Store, state.ConfigurationPending, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := statetest.Set(d.Store, state.Init, nil); err != nil {
		t.Fatal(err)
	}
	done()
	if strings.Join(b.emitted, ",") != "configuration_pending,init" || !b.closed {
		t.Errorf("emitted %v, closed %v", b.emitted, b.closed)
	}
}

func TestDepsWithoutBus(t *testing.T) {
	var logged bytes.Buffer
	e := quietEnv(nil, nil, nil)
	e.log = slog.New(slog.NewTextHandler(&logged, nil))
	d, done, err := e.deps(context.Background(), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if d.Waker != nil || d.Store.OnChange != nil {
		t.Error("a bus that is not there is used")
	}
	if _, err := statetest.Set(d.Store, state.Init, nil); err != nil {
		t.Fatalf("the store does not work without the bus: %v", err)
	}
	if !strings.Contains(logged.String(), "no D-Bus: status changes are not announced") {
		t.Errorf("log %q", logged.String())
	}
}

func TestDepsWithUnits(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &fakeManager{start: start, active: start.Add(time.Second)}
	d, done, err := quietEnv(nil, m, nil).deps(context.Background(), t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	s, a, err := d.Units.UnitTimestamps(context.Background(), paths.UnitPostgres)
	if err != nil || !s.Equal(start) || !a.Equal(start.Add(time.Second)) {
		t.Errorf("timestamps %v %v %v", s, a, err)
	}
	done()
	if !m.closed {
		t.Error("the systemd connection is not closed")
	}
}

func TestLazyUnitsWaitsForTheConnection(t *testing.T) {
	release := make(chan struct{})
	m := &fakeManager{start: time.Unix(1, 0)}
	u := connectUnits(context.Background(), func(context.Context) (unitManager, error) {
		<-release
		return m, nil
	})
	got := make(chan time.Time, 1)
	go func() {
		s, _, _ := u.UnitTimestamps(context.Background(), paths.UnitPostgres)
		got <- s
	}()
	select {
	case <-got:
		t.Fatal("answered before the connection was made")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if s := <-got; !s.Equal(time.Unix(1, 0)) {
		t.Errorf("start %v", s)
	}
	u.Close()
	if !m.closed {
		t.Error("not closed")
	}
}

func TestLazyUnitsConnectError(t *testing.T) {
	boom := errors.New("no systemd")
	u := connectUnits(context.Background(), func(context.Context) (unitManager, error) { return nil, boom })
	if _, _, err := u.UnitTimestamps(context.Background(), paths.UnitPostgres); !errors.Is(err, boom) {
		t.Errorf("error %v, want %v", err, boom)
	}
	u.Close() // nothing to close, must not block or panic
}

func TestStepChecksTheHostFirst(t *testing.T) {
	h := testHost(t)
	h.StateDir = filepath.Join(h.StateDir, "state")
	h.PrivilegedRole = "BAD"
	called := false
	err := quietEnv(&fakeBus{}, nil, nil).step(context.Background(), h, false, func(compute.Settings, *compute.Deps) error {
		called = true
		return nil
	})
	if err == nil || called {
		t.Fatalf("step ran with a bad host (err %v)", err)
	}
}

func TestStepRunsWithDepsAndCloses(t *testing.T) {
	b := &fakeBus{}
	h := testHost(t)
	boom := errors.New("step failed")
	err := quietEnv(b, nil, nil).step(context.Background(), h, false, func(cfg compute.Settings, d *compute.Deps) error {
		if cfg.StateDir != h.StateDir || d.Store.Dir() != h.StateDir || d.Waker == nil {
			t.Errorf("cfg %+v deps %+v", cfg, d)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("error %v, want the step's", err)
	}
	if !b.closed {
		t.Error("the bus is left open")
	}
}

func TestConfigureByHandErrors(t *testing.T) {
	h := testHost(t)
	h.PrivilegedRole = "X"
	if err := ConfigureByHand(context.Background(), h, true, io.Discard); err == nil || !strings.Contains(err.Error(), "--privileged-role-name") {
		t.Errorf("bad role: %v", err)
	}
	h = testHost(t)
	h.ConfigFile = filepath.Join(t.TempDir(), "missing.json")
	if err := ConfigureByHand(context.Background(), h, true, io.Discard); err == nil || !strings.Contains(err.Error(), "read config:") {
		t.Errorf("missing config: %v", err)
	}
}

// TestDepsOverRealBus checks the production wiring against a private dbus-daemon: a
// status change made through the step's store is seen by another bus client.
func TestDepsOverRealBus(t *testing.T) {
	t.Setenv(bus.AddressEnv, bustest.StartSession(t))
	ctx := context.Background()
	watcher, err := bus.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	sigs, cancel, err := watcher.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	e := production
	e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	d, done, err := e.deps(ctx, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if d.Waker == nil {
		t.Fatal("no bus connection")
	}
	if _, err := statetest.Set(d.Store, state.Init, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-sigs:
		if s.Status != "init" {
			t.Errorf("signal %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no StatusChanged signal")
	}
}

func TestStatusWithoutState(t *testing.T) {
	var out bytes.Buffer
	if err := quietEnv(nil, nil, nil).status(context.Background(), t.TempDir(), StatusOptions{}, &out); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v["status"] != "empty" || v["start_time"] != "0001-01-01T00:00:00Z" {
		t.Errorf("status %s", out.String())
	}
}

func TestStatusFull(t *testing.T) {
	dir := t.TempDir()
	store, _ := state.Open(dir)
	if _, err := statetest.Set(store, state.Init, nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := quietEnv(nil, nil, nil).status(context.Background(), dir, StatusOptions{Full: true}, &out); err != nil {
		t.Fatal(err)
	}
	var r state.Record
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Status != state.Init || r.Seq == 0 {
		t.Errorf("full record %s (%v)", out.String(), err)
	}
	if !strings.HasSuffix(out.String(), "}\n") || !strings.Contains(out.String(), "\n  ") {
		t.Errorf("not indented JSON with a newline: %q", out.String())
	}
}

func TestStatusWaitUnknown(t *testing.T) {
	err := quietEnv(nil, nil, nil).status(context.Background(), t.TempDir(), StatusOptions{Wait: "runing", Timeout: time.Second}, io.Discard)
	if err == nil || err.Error() != `--wait: unknown status "runing"` {
		t.Errorf("error %v", err)
	}
}

func TestStatusWaitWokenByBus(t *testing.T) {
	dir := t.TempDir()
	store, _ := state.Open(dir)
	b := &fakeBus{wake: make(chan struct{}, 1)}
	store.OnChange = func(r state.Record) { _ = b.EmitStatusChanged(string(r.Status), r.Seq) }
	go func() {
		time.Sleep(20 * time.Millisecond)
		for _, s := range []state.Status{state.Init, state.Running} {
			if _, err := statetest.Set(store, s, nil); err != nil {
				t.Error(err)
			}
		}
	}()
	var out bytes.Buffer
	err := quietEnv(b, nil, nil).status(context.Background(), dir, StatusOptions{Wait: "running", Timeout: 10 * time.Second}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"status": "running"`) {
		t.Errorf("printed %s", out.String())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.canceled || !b.closed {
		t.Error("the bus subscription is left open")
	}
}

func TestStatusWaitEndsOnFailed(t *testing.T) {
	dir := t.TempDir()
	store, _ := state.Open(dir)
	if _, err := statetest.Set(store, state.Failed, func(r *state.Record) { r.SetError("boom") }); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := quietEnv(nil, nil, nil).status(context.Background(), dir, StatusOptions{Wait: "running", Timeout: 10 * time.Second}, &out)
	if err == nil || err.Error() != "status is failed, not running" {
		t.Errorf("error %v", err)
	}
	if !strings.Contains(out.String(), `"error": "boom"`) {
		t.Errorf("the failed status is not printed: %s", out.String())
	}
}

func TestStatusWaitTimeout(t *testing.T) {
	dir := t.TempDir()
	store, _ := state.Open(dir)
	if _, err := statetest.Set(store, state.Init, nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := quietEnv(nil, nil, nil).status(context.Background(), dir, StatusOptions{Wait: "running", Timeout: 300 * time.Millisecond}, &out)
	if err == nil || err.Error() != "status is still init after 300ms" {
		t.Errorf("error %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q after a timeout", out.String())
	}
}

// TestVMHelpersThroughUnits: as root the helpers run directly; otherwise each run is a
// start of the helper's unit over a systemd connection made for it and closed after.
func TestVMHelpersThroughUnits(t *testing.T) {
	if h := vmHelpers(true, nil, nil); h.Units != nil {
		t.Error("root: helpers would go through units")
	}
	m := &fakeManager{}
	dials := 0
	h := vmHelpers(false, func(context.Context) (unitManager, error) { dials++; return m, nil }, nil)
	if h.Units == nil {
		t.Fatal("not root: no units")
	}
	if err := h.Units.StartUnit(context.Background(), paths.ResizeSwapUnit(4096)); err != nil {
		t.Fatal(err)
	}
	if dials != 1 || !m.closed || len(m.started) != 1 || m.started[0] != "compute-resize-swap@4096.service" {
		t.Errorf("dials %d, closed %v, started %q", dials, m.closed, m.started)
	}
	h = vmHelpers(false, func(context.Context) (unitManager, error) { return nil, errors.New("no systemd") }, nil)
	if err := h.Units.StartUnit(context.Background(), paths.DiskQuotaUnit(1)); err == nil || err.Error() != "no systemd" {
		t.Errorf("StartUnit without systemd = %v", err)
	}
}

// The log shipping's unit calls from compute-init each take a systemd connection of
// their own and close it; a failed dial is the call's error.
func TestOnDemandLogUnits(t *testing.T) {
	ctx := context.Background()
	var dials []*fakeManager
	u := onDemandUnits{dial: func(context.Context) (unitManager, error) {
		m := &fakeManager{}
		dials = append(dials, m)
		return m, nil
	}}
	if st, err := u.ActiveState(ctx, paths.UnitRsyslog); st != "inactive" || err != nil {
		t.Errorf("ActiveState = %q, %v", st, err)
	}
	if err := u.RestartUnit(ctx, paths.UnitRsyslog); err == nil || err.Error() != "fakeManager: no restart" {
		t.Errorf("RestartUnit = %v", err)
	}
	if err := u.StopUnit(ctx, paths.UnitRsyslog); err == nil || err.Error() != "fakeManager: no stop" {
		t.Errorf("StopUnit = %v", err)
	}
	if len(dials) != 3 {
		t.Fatalf("%d connections, want one per call", len(dials))
	}
	for i, m := range dials {
		if !m.closed {
			t.Errorf("connection %d left open", i)
		}
	}
	u = onDemandUnits{dial: func(context.Context) (unitManager, error) { return nil, errors.New("no systemd") }}
	if err := u.RestartUnit(ctx, paths.UnitRsyslog); err == nil || err.Error() != "no systemd" {
		t.Errorf("RestartUnit without systemd = %v", err)
	}
}
