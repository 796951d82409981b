// Package bus is compute-tools' own D-Bus surface: units announce status changes as the
// StatusChanged signal on the system bus, and any unit can wait for one instead of
// polling the state file. A signal is only a wake-up hint (any bus client may emit one);
// the state file stays the source of truth. compute-api may also own the well-known name
// and serve a read-only GetStatus method. compute-monitor owns MonitorBusName and serves
// the LFC object (lfc.go): Prewarm, Offload and CancelPrewarm, and the Changed signal. The system bus needs the policy file
// packaging/dbus/org.computetools.Compute1.conf for owning the name.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Names on the bus.
const (
	BusName      = "org.computetools.Compute1"
	ObjectPath   = dbus.ObjectPath("/org/computetools/Compute1")
	Interface    = "org.computetools.Compute1"
	SignalStatus = "StatusChanged"

	// AddressEnv, when set, is the bus address to use instead of the system bus.
	AddressEnv = "COMPUTE_DBUS_ADDRESS"
)

// StatusSignal is one StatusChanged signal.
type StatusSignal struct {
	Status string
	Seq    uint64
	Sender string // unique name of the emitting connection
}

// Conn is a private connection to the bus.
type Conn struct {
	c *dbus.Conn
	// Log receives what Close and Subscribe cannot report (nil: slog.Default()).
	Log *slog.Logger

	mu       sync.Mutex
	exported bool
}

// Connect opens a private connection to the system bus, or to $COMPUTE_DBUS_ADDRESS when
// set. Connecting, emitting and subscribing need no bus name, so any user may do them.
func Connect(ctx context.Context) (*Conn, error) {
	var (
		c   *dbus.Conn
		err error
	)
	// The sequential handler keeps signals in order (the default one may reorder them
	// when a reader lags).
	opts := []dbus.ConnOption{dbus.WithContext(ctx), dbus.WithSignalHandler(dbus.NewSequentialSignalHandler())}
	if addr := os.Getenv(AddressEnv); addr != "" {
		c, err = dbus.Connect(addr, opts...)
	} else {
		c, err = dbus.ConnectSystemBus(opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to d-bus: %w", err)
	}
	return &Conn{c: c}, nil
}

// Done is closed when the connection is gone: closed, or lost (dbus-daemon restarted).
// A lost connection does not come back: its owner has to connect again (our services
// exit and let systemd restart them).
func (c *Conn) Done() <-chan struct{} { return c.c.Context().Done() }

// Close closes the connection; subscriptions end and their channels stop receiving,
// and an owned name is released.
func (c *Conn) Close() {
	if err := c.c.Close(); err != nil {
		c.logger().Debug("close d-bus connection", "err", err)
	}
}

func (c *Conn) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// UniqueName is the connection's unique bus name (":1.42").
func (c *Conn) UniqueName() string {
	if names := c.c.Names(); len(names) > 0 {
		return names[0]
	}
	return ""
}

// EmitStatusChanged broadcasts StatusChanged(status, seq).
func (c *Conn) EmitStatusChanged(status string, seq uint64) error {
	if err := c.c.Emit(ObjectPath, Interface+"."+SignalStatus, status, seq); err != nil {
		return fmt.Errorf("emit %s: %w", SignalStatus, err)
	}
	return nil
}

func matchOptions() []dbus.MatchOption {
	return []dbus.MatchOption{
		dbus.WithMatchObjectPath(ObjectPath),
		dbus.WithMatchInterface(Interface),
		dbus.WithMatchMember(SignalStatus),
	}
}

// subscribe adds the match rule and calls deliver for every StatusChanged signal until
// cancel is called or the connection closes. cancel is idempotent.
func (c *Conn) subscribe(deliver func(StatusSignal)) (func(), error) {
	if err := c.c.AddMatchSignal(matchOptions()...); err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", SignalStatus, err)
	}
	raw := make(chan *dbus.Signal, 16)
	c.c.Signal(raw)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case s, ok := <-raw:
				if !ok { // connection closed
					return
				}
				if sig, ok := parseStatus(s); ok {
					deliver(sig)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			c.c.RemoveSignal(raw)
			_ = c.c.RemoveMatchSignal(matchOptions()...) // fails only when already closed
		})
	}, nil
}

func parseStatus(s *dbus.Signal) (StatusSignal, bool) {
	if s == nil || s.Path != ObjectPath || s.Name != Interface+"."+SignalStatus || len(s.Body) != 2 {
		return StatusSignal{}, false
	}
	status, ok1 := s.Body[0].(string)
	seq, ok2 := s.Body[1].(uint64)
	if !ok1 || !ok2 {
		return StatusSignal{}, false
	}
	return StatusSignal{Status: status, Seq: seq, Sender: s.Sender}, true
}

// Subscribe returns a channel that receives a wake-up after StatusChanged signals. It
// has room for one pending wake-up and further signals coalesce into it, so a slow reader
// never blocks the bus; the reader should re-read the state file. cancel stops the
// subscription (the channel is not closed). If the match rule cannot be added, the
// failure is logged and the channel never fires, so a waiter falls back to its periodic
// re-check (state.Store.Wait); use SubscribeErr to handle the error instead.
func (c *Conn) Subscribe() (ch <-chan struct{}, cancel func()) {
	ch, cancel, err := c.SubscribeErr()
	if err != nil {
		c.logger().Warn("no d-bus wake-ups, falling back to polling", "err", err)
		return make(chan struct{}), func() {}
	}
	return ch, cancel
}

// SubscribeErr is Subscribe that reports a failure to subscribe.
func (c *Conn) SubscribeErr() (<-chan struct{}, func(), error) {
	wake := make(chan struct{}, 1)
	cancel, err := c.subscribe(func(StatusSignal) {
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return wake, cancel, nil
}

// statusBuffer is how many StatusChanged signals SubscribeStatus keeps for a slow reader.
const statusBuffer = 16

// SubscribeStatus returns the StatusChanged signals themselves. When the reader falls
// more than a few signals behind, the oldest are dropped (signals are hints, never the
// record). cancel stops the subscription; the channel is not closed.
func (c *Conn) SubscribeStatus() (<-chan StatusSignal, func(), error) {
	out := make(chan StatusSignal, statusBuffer)
	cancel, err := c.subscribe(func(s StatusSignal) {
		for {
			select {
			case out <- s:
				return
			default:
			}
			select { // full: drop the oldest and retry
			case <-out:
			default:
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return out, cancel, nil
}

// ErrNameTaken is returned by ClaimName when another connection owns the name.
var ErrNameTaken = errors.New("bus name " + BusName + " is owned by another connection")

// ClaimName requests the well-known name BusName without queueing. On the system bus this
// needs the policy file /usr/share/dbus-1/system.d/org.computetools.Compute1.conf.
// Call ServeStatus first if the name should answer GetStatus from the start.
func (c *Conn) ClaimName() error { return c.claim(BusName, ErrNameTaken) }

// claim requests name without queueing; taken is the error when another connection owns it.
func (c *Conn) claim(name string, taken error) error {
	r, err := c.c.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("request bus name %s (is the D-Bus policy file %s.conf installed?): %w", name, BusName, err)
	}
	switch r {
	case dbus.RequestNameReplyPrimaryOwner, dbus.RequestNameReplyAlreadyOwner:
		return nil
	case dbus.RequestNameReplyExists, dbus.RequestNameReplyInQueue:
		return taken
	default:
		return fmt.Errorf("request bus name %s: unexpected reply %d", name, r)
	}
}

// ReleaseName gives the well-known name up.
func (c *Conn) ReleaseName() error {
	if _, err := c.c.ReleaseName(BusName); err != nil {
		return fmt.Errorf("release bus name %s: %w", BusName, err)
	}
	return nil
}

// statusObject is the exported object; GetStatus is its only method.
type statusObject struct{ status func() string }

// GetStatus returns the current compute status.
func (o statusObject) GetStatus() (string, *dbus.Error) {
	return o.status(), nil
}

const introspectXML = `<node>
  <interface name="` + Interface + `">
    <method name="GetStatus"><arg name="status" type="s" direction="out"/></method>
    <signal name="` + SignalStatus + `"><arg name="status" type="s"/><arg name="seq" type="t"/></signal>
  </interface>` + introspect.IntrospectDataString + `</node>`

// ServeStatus exports the object ObjectPath with GetStatus() answered by status (which
// must be cheap and safe for concurrent use), and org.freedesktop.DBus.Introspectable.
func (c *Conn) ServeStatus(status func() string) error {
	if status == nil {
		return errors.New("serve status: nil status func")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exported {
		return errors.New("serve status: already exported")
	}
	if err := c.c.Export(statusObject{status}, ObjectPath, Interface); err != nil {
		return fmt.Errorf("export %s: %w", ObjectPath, err)
	}
	if err := c.c.Export(introspect.Introspectable(introspectXML), ObjectPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fmt.Errorf("export introspection: %w", err)
	}
	c.exported = true
	return nil
}

// GetStatus calls GetStatus on the owner of BusName.
func (c *Conn) GetStatus(ctx context.Context) (string, error) {
	var s string
	err := c.c.Object(BusName, ObjectPath).CallWithContext(ctx, Interface+".GetStatus", 0).Store(&s)
	if err != nil {
		return "", fmt.Errorf("call %s.GetStatus: %w", Interface, err)
	}
	return s, nil
}
