package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// compute-monitor's LFC object. The monitor owns MonitorBusName and serves LFCPath: the
// methods start a prewarm or an offload and answer at once whether it was taken (a
// refusal is a D-Bus error named LFCErrorBusy, LFCErrorNotRunning, LFCErrorNoExtension or
// LFCErrorInvalid);
// the Changed signal follows each LFC state change the monitor published into the state
// record (a hint, as StatusChanged: the record is the source of truth). Calls are
// allowed to root and postgres only (packaging/dbus/org.computetools.Compute1.conf).
const (
	MonitorBusName = "org.computetools.Compute1.Monitor"
	LFCPath        = dbus.ObjectPath("/org/computetools/Compute1/LFC")
	LFCInterface   = "org.computetools.Compute1.LFC"
	SignalLFC      = "Changed"

	LFCErrorBusy        = LFCInterface + ".Error.Busy"
	LFCErrorNotRunning  = LFCInterface + ".Error.NotRunning"
	LFCErrorNoExtension = LFCInterface + ".Error.NoExtension"
	LFCErrorInvalid     = LFCInterface + ".Error.InvalidArgument"
	LFCErrorFailed      = LFCInterface + ".Error.Failed"
)

var refusalNames = map[lfcstate.Refusal]string{
	lfcstate.RefusedBusy:        LFCErrorBusy,
	lfcstate.RefusedNotRunning:  LFCErrorNotRunning,
	lfcstate.RefusedNoExtension: LFCErrorNoExtension,
	lfcstate.RefusedInvalid:     LFCErrorInvalid,
}

// LFCHandler carries out the LFC methods (compute-monitor). A refusal is a
// *lfcstate.RefusedError; any other error is reported to the caller as a failure.
type LFCHandler interface {
	Prewarm(fromEndpoint string) error
	Offload() error
	CancelPrewarm() (cancelled bool, err error)
}

// lfcObject is the exported object.
type lfcObject struct{ h LFCHandler }

func toDBusError(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	var r *lfcstate.RefusedError
	if errors.As(err, &r) {
		if name, ok := refusalNames[r.Refusal]; ok {
			return dbus.NewError(name, []any{r.Msg})
		}
	}
	return dbus.NewError(LFCErrorFailed, []any{err.Error()})
}

// Prewarm takes a prewarm from fromEndpoint's state ("" = this compute's).
func (o lfcObject) Prewarm(fromEndpoint string) *dbus.Error {
	return toDBusError(o.h.Prewarm(fromEndpoint))
}

// Offload takes an offload.
func (o lfcObject) Offload() *dbus.Error { return toDBusError(o.h.Offload()) }

// CancelPrewarm cancels a running prewarm; cancelled is false when none ran.
func (o lfcObject) CancelPrewarm() (bool, *dbus.Error) {
	ok, err := o.h.CancelPrewarm()
	return ok, toDBusError(err)
}

const lfcIntrospectXML = `<node>
  <interface name="` + LFCInterface + `">
    <method name="Prewarm"><arg name="from_endpoint" type="s" direction="in"/></method>
    <method name="Offload"></method>
    <method name="CancelPrewarm"><arg name="cancelled" type="b" direction="out"/></method>
    <signal name="` + SignalLFC + `"><arg name="seq" type="t"/></signal>
  </interface>` + introspect.IntrospectDataString + `</node>`

// ServeLFC exports h at LFCPath (with introspection). Claim MonitorBusName afterwards
// (ClaimMonitorName) so that callers find it.
func (c *Conn) ServeLFC(h LFCHandler) error {
	if h == nil {
		return errors.New("serve lfc: nil handler")
	}
	if err := c.c.Export(lfcObject{h}, LFCPath, LFCInterface); err != nil {
		return fmt.Errorf("export %s: %w", LFCPath, err)
	}
	if err := c.c.Export(introspect.Introspectable(lfcIntrospectXML), LFCPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fmt.Errorf("export lfc introspection: %w", err)
	}
	return nil
}

// ClaimMonitorName requests MonitorBusName without queueing (ErrMonitorNameTaken when
// another connection owns it). On the system bus this needs the policy file.
func (c *Conn) ClaimMonitorName() error { return c.claim(MonitorBusName, ErrMonitorNameTaken) }

// ErrMonitorNameTaken is returned by ClaimMonitorName when another connection owns the name.
var ErrMonitorNameTaken = errors.New("bus name " + MonitorBusName + " is owned by another connection")

// EmitLFCChanged broadcasts Changed(seq) from LFCPath.
func (c *Conn) EmitLFCChanged(seq uint64) error {
	if err := c.c.Emit(LFCPath, LFCInterface+"."+SignalLFC, seq); err != nil {
		return fmt.Errorf("emit %s: %w", SignalLFC, err)
	}
	return nil
}

// LFCPrewarm asks the monitor to take a prewarm. A refusal is a *lfcstate.RefusedError; no
// monitor on the bus is lfcstate.ErrUnavailable, no answer in time lfcstate.ErrNoAnswer
// (both wrapped).
func (c *Conn) LFCPrewarm(ctx context.Context, fromEndpoint string) error {
	return c.lfcCall(ctx, "Prewarm", nil, fromEndpoint)
}

// LFCOffload asks the monitor to take an offload.
func (c *Conn) LFCOffload(ctx context.Context) error {
	return c.lfcCall(ctx, "Offload", nil)
}

// LFCCancelPrewarm asks the monitor to cancel a running prewarm.
func (c *Conn) LFCCancelPrewarm(ctx context.Context) (bool, error) {
	var ok bool
	err := c.lfcCall(ctx, "CancelPrewarm", &ok)
	return ok, err
}

func (c *Conn) lfcCall(ctx context.Context, method string, out *bool, args ...any) error {
	call := c.c.Object(MonitorBusName, LFCPath).CallWithContext(ctx, LFCInterface+"."+method, 0, args...)
	err := call.Err
	if err == nil && out != nil {
		err = call.Store(out)
	}
	if err == nil {
		return nil
	}
	return fromDBusError(method, err)
}

// fromDBusError maps a failed call: the monitor's refusals to *lfcstate.RefusedError, a
// missing monitor to lfcstate.ErrUnavailable, a silent one (or the caller's deadline) to
// lfcstate.ErrNoAnswer.
func fromDBusError(method string, err error) error {
	var de dbus.Error
	var dep *dbus.Error
	switch {
	case errors.As(err, &de):
		dep = &de
	case errors.As(err, &dep):
	default:
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("%w: call %s: %w", lfcstate.ErrNoAnswer, method, err)
		}
		return fmt.Errorf("call %s.%s: %w", LFCInterface, method, err)
	}
	msg := ""
	if len(dep.Body) > 0 {
		msg, _ = dep.Body[0].(string)
	}
	for r, name := range refusalNames {
		if dep.Name == name {
			return &lfcstate.RefusedError{Refusal: r, Msg: msg}
		}
	}
	switch dep.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.UnknownObject", "org.freedesktop.DBus.Error.UnknownMethod":
		return fmt.Errorf("%w on D-Bus: %s", lfcstate.ErrUnavailable, strings.TrimSpace(dbusText(dep)))
	case "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout":
		return fmt.Errorf("%w: %s", lfcstate.ErrNoAnswer, strings.TrimSpace(dbusText(dep)))
	case LFCErrorFailed:
		return fmt.Errorf("compute-monitor: %s: %s", method, msg)
	}
	return fmt.Errorf("call %s.%s: %s", LFCInterface, method, dbusText(dep))
}

func dbusText(e *dbus.Error) string {
	if len(e.Body) > 0 {
		if s, ok := e.Body[0].(string); ok {
			return e.Name + ": " + s
		}
	}
	return e.Name
}
