package apiserver

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/bus/bustest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// closingSystemd is a fakeSystemd that records Close.
type closingSystemd struct {
	fakeSystemd
	mu     sync.Mutex
	closed bool
}

func (c *closingSystemd) Close() { c.mu.Lock(); c.closed = true; c.mu.Unlock() }

func (c *closingSystemd) isClosed() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed }

func dialer(m *closingSystemd, err error) func(context.Context) (systemdConn, error) {
	return func(context.Context) (systemdConn, error) {
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}

func TestConnectOverPrivateBus(t *testing.T) {
	t.Setenv(bus.AddressEnv, bustest.StartSession(t))
	ctx := context.Background()
	m := &closingSystemd{}
	d, disconnect, err := connect(ctx, t.TempDir(), quiet(), dialer(m, nil))
	if err != nil {
		t.Fatal(err)
	}
	if d.Systemd != m || d.Bus == nil || d.Store == nil {
		t.Fatalf("deps %+v", d)
	}

	client, err := bus.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if s, err := client.GetStatus(ctx); err != nil || s != "empty" {
		t.Errorf("GetStatus before any record: %q, %v", s, err)
	}
	sigs, cancel, err := client.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := statetest.Set(d.Store, state.ConfigurationPending, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-sigs:
		if sig.Status != "configuration_pending" {
			t.Errorf("signal %+v", sig)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the status change was not announced")
	}
	if s, err := client.GetStatus(ctx); err != nil || s != "configuration_pending" {
		t.Errorf("GetStatus: %q, %v", s, err)
	}

	// A second server cannot take the name while the first holds it.
	if _, _, err := connect(ctx, t.TempDir(), quiet(), dialer(&closingSystemd{}, nil)); err == nil {
		t.Error("a second compute-api claimed the bus name")
	}

	disconnect()
	if !m.isClosed() {
		t.Error("the systemd connection is left open")
	}
	if _, err := client.GetStatus(ctx); err == nil {
		t.Error("GetStatus still answered after disconnect")
	}
}

func TestConnectSystemdFailure(t *testing.T) {
	t.Setenv(bus.AddressEnv, bustest.StartSession(t))
	_, _, err := connect(context.Background(), t.TempDir(), quiet(), dialer(nil, errors.New("no systemd")))
	if err == nil || err.Error() != "connect to systemd: no systemd" {
		t.Fatalf("error %v", err)
	}
	// The bus connection was closed: the name is free for the next try.
	m := &closingSystemd{}
	_, disconnect, err := connect(context.Background(), t.TempDir(), quiet(), dialer(m, nil))
	if err != nil {
		t.Fatalf("the name was not released: %v", err)
	}
	disconnect()
}

func TestConnectBusFailure(t *testing.T) {
	t.Setenv(bus.AddressEnv, "unix:path="+t.TempDir()+"/no-bus")
	m := &closingSystemd{}
	_, _, err := connect(context.Background(), t.TempDir(), quiet(), dialer(m, nil))
	if err == nil || !strings.HasPrefix(err.Error(), "connect to the system bus:") {
		t.Fatalf("error %v", err)
	}
	if !m.isClosed() {
		t.Error("the systemd connection is left open")
	}
}
