package bus

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/bus/bustest"
)

// guard bounds every wait for a signal; it only turns a lost signal into a failure.
const guard = 15 * time.Second

func connect(t *testing.T) *Conn {
	t.Helper()
	c, err := Connect(context.Background())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sessionPair starts a private bus and connects two clients to it through AddressEnv.
func sessionPair(t *testing.T) (a, b *Conn) {
	t.Helper()
	t.Setenv(AddressEnv, bustest.StartSession(t))
	return connect(t), connect(t)
}

func waitWake(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(guard):
		t.Fatal("no wake-up received")
	}
}

func waitStatus(t *testing.T, ch <-chan StatusSignal) StatusSignal {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(guard):
		t.Fatal("no StatusChanged signal received")
		return StatusSignal{}
	}
}

func TestEmitWakesSubscriber(t *testing.T) {
	a, b := sessionPair(t)
	wake, cancel := b.Subscribe()
	defer cancel()
	status, cancelStatus, err := b.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancelStatus()

	if err := a.EmitStatusChanged("running", 42); err != nil {
		t.Fatal(err)
	}
	waitWake(t, wake)
	got := waitStatus(t, status)
	want := StatusSignal{Status: "running", Seq: 42, Sender: a.UniqueName()}
	if got != want || want.Sender == "" {
		t.Errorf("signal = %+v, want %+v", got, want)
	}
}

func TestSubscribeIgnoresForeignSignals(t *testing.T) {
	a, b := sessionPair(t)
	status, cancel, err := b.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	// Same path, interface and member but a wrong body; other member; other path.
	if err := a.c.Emit(ObjectPath, Interface+"."+SignalStatus, int32(1)); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Emit(ObjectPath, Interface+".Other", "x", uint64(1)); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Emit("/elsewhere", Interface+"."+SignalStatus, "x", uint64(1)); err != nil {
		t.Fatal(err)
	}
	if err := a.EmitStatusChanged("marker", 7); err != nil {
		t.Fatal(err)
	}
	// Signals from one sender arrive in order: the first one delivered must be the marker.
	if got := waitStatus(t, status); got.Status != "marker" || got.Seq != 7 {
		t.Errorf("first delivered signal = %+v, want the marker", got)
	}
}

func TestWakeUpsCoalesce(t *testing.T) {
	a, b := sessionPair(t)
	wake, cancel := b.Subscribe()
	defer cancel()
	if cap(wake) != 1 {
		t.Fatalf("wake channel capacity = %d, want 1", cap(wake))
	}
	status, cancelStatus, err := b.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancelStatus()

	for i := uint64(1); i <= 10; i++ {
		if err := a.EmitStatusChanged("configuration", i); err != nil {
			t.Fatal(err)
		}
	}
	// All ten reached b (the status subscription saw the last one) while nobody read wake.
	for s := waitStatus(t, status); s.Seq != 10; s = waitStatus(t, status) {
	}
	waitWake(t, wake)
	// Not stuck: after draining, the next signal wakes again.
	select {
	case <-wake:
	default:
	}
	if err := a.EmitStatusChanged("running", 11); err != nil {
		t.Fatal(err)
	}
	for s := waitStatus(t, status); s.Seq != 11; s = waitStatus(t, status) {
	}
	waitWake(t, wake)
}

func TestCancelStopsWakeUps(t *testing.T) {
	a, b := sessionPair(t)
	wake, cancel := b.Subscribe()
	status, cancelStatus, err := b.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancelStatus()
	cancel()
	cancel() // idempotent
	if err := a.EmitStatusChanged("running", 1); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, status) // b received it, through the other subscription
	select {
	case <-wake:
		t.Error("wake-up after cancel")
	default:
	}
}

// A reader that lags behind loses the oldest signals, never the newest, and never sees
// them out of order.
func TestSubscribeStatusLaggingReader(t *testing.T) {
	a, b := sessionPair(t)
	status, cancel, err := b.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	const n = statusBuffer * 3
	for i := uint64(1); i <= n; i++ {
		if err := a.EmitStatusChanged("configuration", i); err != nil {
			t.Fatal(err)
		}
	}
	// Read until the last signal: what arrives is increasing and ends with n.
	var last uint64
	for last != n {
		s := waitStatus(t, status)
		if s.Seq <= last {
			t.Fatalf("seq %d after %d", s.Seq, last)
		}
		last = s.Seq
	}
}

func TestClaimName(t *testing.T) {
	a, b := sessionPair(t)
	if err := a.ClaimName(); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := a.ClaimName(); err != nil {
		t.Errorf("claim by the owner again: %v", err)
	}
	if err := b.ClaimName(); !errors.Is(err, ErrNameTaken) {
		t.Errorf("second connection's claim = %v, want ErrNameTaken", err)
	}
	if err := a.ReleaseName(); err != nil {
		t.Fatal(err)
	}
	if err := b.ClaimName(); err != nil {
		t.Errorf("claim after release: %v", err)
	}
}

func TestGetStatusRoundTrip(t *testing.T) {
	a, b := sessionPair(t)
	ctx := context.Background()
	if _, err := b.GetStatus(ctx); err == nil {
		t.Fatal("GetStatus with no owner succeeded")
	}
	var cur atomic.Value
	cur.Store("init")
	if err := a.ServeStatus(func() string { return cur.Load().(string) }); err != nil {
		t.Fatal(err)
	}
	if err := a.ServeStatus(func() string { return "" }); err == nil {
		t.Error("second ServeStatus succeeded")
	}
	if err := a.ClaimName(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"init", "running"} {
		cur.Store(want)
		got, err := b.GetStatus(ctx)
		if err != nil || got != want {
			t.Errorf("GetStatus = %q, %v; want %q", got, err, want)
		}
	}
	var xml string
	if err := b.c.Object(BusName, ObjectPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<interface name="org.computetools.Compute1">`, `<method name="GetStatus">`, `<signal name="StatusChanged">`, `org.freedesktop.DBus.Introspectable`} {
		if !strings.Contains(xml, want) {
			t.Errorf("introspection lacks %s:\n%s", want, xml)
		}
	}
}

func TestConnectBadAddress(t *testing.T) {
	t.Setenv(AddressEnv, "unix:path="+t.TempDir()+"/no-bus")
	_, err := Connect(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "connect to d-bus: ") {
		t.Fatalf("Connect = %v, want a connect error", err)
	}
}

// Done closes when dbus-daemon goes away (restarted), so that the owner can connect
// again; it stays open while the daemon runs.
func TestDoneWhenTheDaemonGoes(t *testing.T) {
	var c *Conn
	t.Run("daemon", func(t *testing.T) {
		t.Setenv(AddressEnv, bustest.StartSession(t))
		var err error
		if c, err = Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
			t.Fatal("Done closed while the daemon runs")
		case <-time.After(100 * time.Millisecond):
		}
	}) // the daemon is stopped here
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10 s after the daemon stopped")
	}
}
