package bus

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// fakeLFC answers the LFC methods as told.
type fakeLFC struct {
	offloads    atomic.Int64
	prewarmFrom atomic.Value // string

	mu         sync.Mutex // the answers are set by the test, read on godbus's goroutine
	prewarmErr error
	offloadErr error
	cancelled  bool
}

func (f *fakeLFC) set(fn func(*fakeLFC)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeLFC) Prewarm(from string) error {
	f.prewarmFrom.Store(from)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prewarmErr
}

func (f *fakeLFC) Offload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.offloadErr == nil {
		f.offloads.Add(1)
	}
	return f.offloadErr
}

func (f *fakeLFC) CancelPrewarm() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled, nil
}

func TestLFCMethods(t *testing.T) {
	mon, api := sessionPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()

	// No monitor on the bus yet: unavailable, not a refusal.
	err := api.LFCOffload(ctx)
	if !errors.Is(err, lfcstate.ErrUnavailable) {
		t.Fatalf("offload without a monitor = %v, want lfcstate.ErrUnavailable", err)
	}

	f := &fakeLFC{cancelled: true}
	if err := mon.ServeLFC(f); err != nil {
		t.Fatal(err)
	}
	if err := mon.ClaimMonitorName(); err != nil {
		t.Fatal(err)
	}
	if err := api.LFCPrewarm(ctx, "ep-other"); err != nil {
		t.Fatalf("prewarm: %v", err)
	}
	if got := f.prewarmFrom.Load(); got != "ep-other" {
		t.Errorf("prewarm from = %v, want ep-other", got)
	}
	if err := api.LFCOffload(ctx); err != nil || f.offloads.Load() != 1 {
		t.Fatalf("offload: %v (taken %d)", err, f.offloads.Load())
	}
	if ok, err := api.LFCCancelPrewarm(ctx); err != nil || !ok {
		t.Errorf("cancel = %v, %v; want true", ok, err)
	}

	// Each refusal comes back as itself, with its reason.
	for _, r := range []lfcstate.Refusal{lfcstate.RefusedBusy, lfcstate.RefusedNotRunning, lfcstate.RefusedNoExtension, lfcstate.RefusedInvalid} {
		f.set(func(f *fakeLFC) { f.prewarmErr = &lfcstate.RefusedError{Refusal: r, Msg: "why " + refusalNames[r]} })
		err := api.LFCPrewarm(ctx, "")
		var le *lfcstate.RefusedError
		if !errors.As(err, &le) || le.Refusal != r || le.Msg != "why "+refusalNames[r] {
			t.Errorf("refusal %d came back as %#v", r, err)
		}
	}
	// Another error is a failure with its text, neither a refusal nor unavailable.
	f.set(func(f *fakeLFC) { f.offloadErr = errors.New("disk on fire") })
	err = api.LFCOffload(ctx)
	var le *lfcstate.RefusedError
	if err == nil || errors.As(err, &le) || errors.Is(err, lfcstate.ErrUnavailable) || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("failure = %v", err)
	}

	// A second monitor cannot take the name.
	if err := api.ClaimMonitorName(); !errors.Is(err, ErrMonitorNameTaken) {
		t.Errorf("second claim = %v, want ErrMonitorNameTaken", err)
	}

	// Gone again: unavailable.
	mon.Close()
	deadline := time.Now().Add(guard)
	for {
		err = api.LFCOffload(ctx)
		if errors.Is(err, lfcstate.ErrUnavailable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, lfcstate.ErrUnavailable) {
		t.Errorf("offload after the monitor left = %v, want lfcstate.ErrUnavailable", err)
	}
}

func TestLFCChangedSignal(t *testing.T) {
	mon, other := sessionPair(t)
	if err := other.c.AddMatchSignal(dbus.WithMatchObjectPath(LFCPath), dbus.WithMatchInterface(LFCInterface), dbus.WithMatchMember(SignalLFC)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 4)
	other.c.Signal(ch)
	if err := mon.EmitLFCChanged(12); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-ch:
		if s.Name != LFCInterface+"."+SignalLFC || len(s.Body) != 1 || s.Body[0] != uint64(12) {
			t.Errorf("signal = %+v", s)
		}
	case <-time.After(guard):
		t.Fatal("no Changed signal")
	}
}

func TestLFCIntrospection(t *testing.T) {
	mon, api := sessionPair(t)
	if err := mon.ServeLFC(&fakeLFC{}); err != nil {
		t.Fatal(err)
	}
	if err := mon.ClaimMonitorName(); err != nil {
		t.Fatal(err)
	}
	var xml string
	if err := api.c.Object(MonitorBusName, LFCPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{`method name="Prewarm"`, `method name="Offload"`, `method name="CancelPrewarm"`, `signal name="Changed"`} {
		if !strings.Contains(xml, m) {
			t.Errorf("introspection lacks %s", m)
		}
	}
}
