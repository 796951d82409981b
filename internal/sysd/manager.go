package sysd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// JobResultDone is the only successful systemd job result.
const JobResultDone = "done"

// JobError reports a systemd job that finished with a result other than "done":
// "canceled", "timeout", "failed", "dependency", "skipped", ...
type JobError struct {
	Op     string // "start", "stop", "restart"
	Unit   string
	Result string
}

func (e *JobError) Error() string {
	return fmt.Sprintf("%s %s: job result %q", e.Op, e.Unit, e.Result)
}

// ErrDisconnected marks the error of a call that failed because the connection to
// systemd is gone (the bus or systemd went away, or Close). A Manager does not
// reconnect: a long-running caller that sees it should exit non-zero and let its unit's
// Restart= start it again with a new connection, rather than fail every call forever.
var ErrDisconnected = errors.New("the connection to systemd is lost")

// ErrAccessDenied marks the error of a call that systemd refused for lack of
// permission: polkit said no, or would have to ask someone (D-Bus errors
// org.freedesktop.DBus.Error.AccessDenied and InteractiveAuthorizationRequired).
var ErrAccessDenied = errors.New("systemd refused the request: not permitted")

// denied marks err with ErrAccessDenied when it is such a refusal.
func denied(err error) error {
	var de godbus.Error
	var dep *godbus.Error
	name := ""
	switch {
	case errors.As(err, &de):
		name = de.Name
	case errors.As(err, &dep) && dep != nil:
		name = dep.Name
	}
	switch name {
	case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return fmt.Errorf("%w: %w", ErrAccessDenied, err)
	}
	return err
}

// Manager drives units through the systemd manager API. It is safe for concurrent use.
type Manager struct {
	conn *sddbus.Conn
}

// Connected reports whether the connections to systemd are up.
func (m *Manager) Connected() bool { return m.conn.Connected() }

// lost marks err, the error of a D-Bus call, with ErrDisconnected when the connection
// is gone.
func (m *Manager) lost(err error) error {
	if !m.conn.Connected() {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	return err
}

// NewManager connects to the system's systemd: the system bus, or as root systemd's
// private socket when the bus is not available.
func NewManager(ctx context.Context) (*Manager, error) {
	c, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &Manager{conn: c}, nil
}

// NewManagerWithDialer connects through dial, which must return a new, authenticated
// connection (after Hello, when on a bus) on every call; it is called twice. Tests use
// it to reach a systemd manager on a private bus.
func NewManagerWithDialer(dial func() (*godbus.Conn, error)) (*Manager, error) {
	c, err := sddbus.NewConnection(dial)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &Manager{conn: c}, nil
}

// Close closes the connections to systemd.
func (m *Manager) Close() {
	m.conn.Close()
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

// StartUnit starts name (mode "replace") and waits for the job to finish with "done".
func (m *Manager) StartUnit(ctx context.Context, name string) error {
	return m.runJob(ctx, "start", name, m.conn.StartUnitContext)
}

// StopUnit stops name (mode "replace") and waits for the job to finish with "done".
func (m *Manager) StopUnit(ctx context.Context, name string) error {
	return m.runJob(ctx, "stop", name, m.conn.StopUnitContext)
}

// RestartUnit restarts name (mode "replace") and waits for the job to finish with "done".
func (m *Manager) RestartUnit(ctx context.Context, name string) error {
	return m.runJob(ctx, "restart", name, m.conn.RestartUnitContext)
}

// ReloadUnit reloads name (`systemctl reload`: its ExecReload=; mode "replace") and waits
// for the job to finish with "done".
func (m *Manager) ReloadUnit(ctx context.Context, name string) error {
	return m.runJob(ctx, "reload", name, m.conn.ReloadUnitContext)
}

// QueueStop enqueues a stop of name (mode "replace") and returns once systemd has queued
// the job, without waiting for it: for a stop that ends the caller itself (compute-api
// stopping compute.target, which it is part of).
func (m *Manager) QueueStop(ctx context.Context, name string) error {
	if _, err := m.conn.StopUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("stop %s: %w", name, m.lost(err))
	}
	return nil
}

// PowerOffTarget is the unit PowerOff starts.
const PowerOffTarget = "poweroff.target"

// PowerOff asks systemd to power the machine off: a start of poweroff.target with mode
// "replace-irreversibly", which is what `systemctl poweroff` asks of the manager when it
// does not go through logind (an orderly shutdown: every unit is stopped first). It
// returns once the job is queued.
func (m *Manager) PowerOff(ctx context.Context) error {
	if _, err := m.conn.StartUnitContext(ctx, PowerOffTarget, "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("start %s: %w", PowerOffTarget, m.lost(err))
	}
	return nil
}

func (m *Manager) runJob(ctx context.Context, op, name string, enqueue jobFunc) error {
	// Buffered: go-systemd sends the result from its signal loop and would block there
	// if we stopped waiting because ctx ended.
	ch := make(chan string, 1)
	if _, err := enqueue(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, m.lost(err))
	}
	return waitJob(ctx, op, name, ch)
}

// waitJob waits for a job's result on ch: nil for "done", a *JobError for any other
// result, and ctx's error if ctx ends first.
func waitJob(ctx context.Context, op, name string, ch <-chan string) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s %s: wait for job: %w", op, name, ctx.Err())
	case res, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s %s: job result channel closed", op, name)
		}
		if res != JobResultDone {
			return &JobError{Op: op, Unit: name, Result: res}
		}
		return nil
	}
}

// KillUnit sends sig to the unit's main process (who "main") or all its processes
// ("all"; "control" is accepted too). It does not wait for anything to exit.
func (m *Manager) KillUnit(ctx context.Context, name string, who string, sig syscall.Signal) error {
	switch sddbus.Who(who) {
	case sddbus.Main, sddbus.All, sddbus.Control:
	default:
		return fmt.Errorf("kill %s: invalid target %q (want main or all)", name, who)
	}
	if err := m.conn.KillUnitWithTarget(ctx, name, sddbus.Who(who), int32(sig)); err != nil {
		return fmt.Errorf("kill %s (%s, %s): %w", name, who, sig, m.lost(err))
	}
	return nil
}

// ActiveState returns the unit's ActiveState: "active", "inactive", "failed",
// "activating", "deactivating", "reloading", ...
func (m *Manager) ActiveState(ctx context.Context, name string) (string, error) {
	p, err := m.conn.GetUnitPropertyContext(ctx, name, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("get %s ActiveState: %w", name, m.lost(err))
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("get %s ActiveState: unexpected type %s", name, p.Value.Signature())
	}
	return s, nil
}

// UnitTimestamps returns when the service's main process last started
// (ExecMainStartTimestamp) and when the unit last entered the active state
// (ActiveEnterTimestamp). A timestamp systemd has not recorded is the zero time.
func (m *Manager) UnitTimestamps(ctx context.Context, name string) (execMainStart, activeEnter time.Time, err error) {
	p, err := m.conn.GetServicePropertyContext(ctx, name, "ExecMainStartTimestamp")
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("get %s ExecMainStartTimestamp: %w", name, m.lost(err))
	}
	if execMainStart, err = usecTime(p); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("get %s: %w", name, err)
	}
	p, err = m.conn.GetUnitPropertyContext(ctx, name, "ActiveEnterTimestamp")
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("get %s ActiveEnterTimestamp: %w", name, m.lost(err))
	}
	if activeEnter, err = usecTime(p); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("get %s: %w", name, err)
	}
	return execMainStart, activeEnter, nil
}

// usecTime converts a systemd timestamp property (uint64 microseconds since the epoch,
// 0 for never) to a time.
func usecTime(p *sddbus.Property) (time.Time, error) {
	v, ok := p.Value.Value().(uint64)
	if !ok {
		return time.Time{}, fmt.Errorf("property %s: unexpected type %s", p.Name, p.Value.Signature())
	}
	if v == 0 {
		return time.Time{}, nil
	}
	return time.UnixMicro(int64(v)), nil
}

// PendingStart reports whether a start (or restart) job is queued or running for the unit:
// true while systemd is bringing it up as part of a transaction.
func (m *Manager) PendingStart(ctx context.Context, name string) (bool, error) {
	jobs, err := m.conn.ListJobsContext(ctx)
	if err != nil {
		return false, fmt.Errorf("list jobs: %w", m.lost(err))
	}
	return hasStartJob(jobs, name), nil
}

// StartWaiting reports whether a start (or restart) job of the unit is still queued
// ("waiting"), that is, the unit's new run has not begun.
func (m *Manager) StartWaiting(ctx context.Context, name string) (bool, error) {
	jobs, err := m.conn.ListJobsContext(ctx)
	if err != nil {
		return false, fmt.Errorf("list jobs: %w", m.lost(err))
	}
	for _, j := range jobs {
		if j.Unit == name && (j.JobType == "start" || j.JobType == "restart") && j.Status == "waiting" {
			return true, nil
		}
	}
	return false, nil
}

func hasStartJob(jobs []sddbus.JobStatus, name string) bool {
	for _, j := range jobs {
		if j.Unit == name && (j.JobType == "start" || j.JobType == "restart") {
			return true
		}
	}
	return false
}

// InvocationID is the unit's current invocation ID (hex), empty when it has none (it
// has not started since it was last stopped).
func (m *Manager) InvocationID(ctx context.Context, name string) (string, error) {
	p, err := m.conn.GetUnitPropertyContext(ctx, name, "InvocationID")
	if err != nil {
		return "", fmt.Errorf("invocation id of %s: %w", name, m.lost(err))
	}
	b, ok := p.Value.Value().([]byte)
	if !ok {
		return "", fmt.Errorf("invocation id of %s: unexpected type %T", name, p.Value.Value())
	}
	return hex.EncodeToString(b), nil
}

// MemoryHighInfinity is MemoryHigh=infinity: no limit.
const MemoryHighInfinity = math.MaxUint64

// unitInterface is the D-Bus interface of the unit's type ("Service" for
// "compute-postgres.service"), which carries the cgroup and resource-control properties.
func unitInterface(unit string) (string, error) {
	i := strings.LastIndexByte(unit, '.')
	if i < 0 {
		return "", fmt.Errorf("unit %q has no type suffix", unit)
	}
	switch t := unit[i+1:]; t {
	case "service", "scope", "slice", "socket", "mount", "swap":
		return strings.ToUpper(t[:1]) + t[1:], nil
	default:
		return "", fmt.Errorf("unit %q: type %q has no control group", unit, t)
	}
}

// ControlGroup returns the unit's control group, as a path below the root of the
// cgroup hierarchy ("/system.slice/compute-postgres.service"); "" when the unit has
// none (it is not running).
func (m *Manager) ControlGroup(ctx context.Context, unit string) (string, error) {
	iface, err := unitInterface(unit)
	if err != nil {
		return "", fmt.Errorf("control group of %s: %w", unit, err)
	}
	p, err := m.conn.GetUnitTypePropertyContext(ctx, unit, iface, "ControlGroup")
	if err != nil {
		return "", fmt.Errorf("control group of %s: %w", unit, m.lost(err))
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("control group of %s: unexpected type %s", unit, p.Value.Signature())
	}
	return s, nil
}

// SetMemoryHigh sets the unit's MemoryHigh= to bytes (MemoryHighInfinity: no limit) at
// runtime only, as `systemctl set-property --runtime <unit> MemoryHigh=<bytes>`: systemd
// writes the unit's cgroup memory.high and keeps the setting until reboot (a drop-in
// under /run/systemd/system.control), also across restarts of the unit. The limit is
// never written into cgroup files behind systemd's back. A refusal (the caller is not
// root and polkit does not allow set-property on the unit) is marked ErrAccessDenied.
func (m *Manager) SetMemoryHigh(ctx context.Context, unit string, bytes uint64) error {
	if err := m.conn.SetUnitPropertiesContext(ctx, unit, true, sddbus.Property{Name: "MemoryHigh", Value: godbus.MakeVariant(bytes)}); err != nil {
		return fmt.Errorf("set MemoryHigh of %s: %w", unit, m.lost(denied(err)))
	}
	return nil
}

// MemoryHigh returns the unit's MemoryHigh= in bytes (MemoryHighInfinity when it has
// no limit), what `systemctl show <unit> -p MemoryHigh` shows.
func (m *Manager) MemoryHigh(ctx context.Context, unit string) (uint64, error) {
	iface, err := unitInterface(unit)
	if err != nil {
		return 0, fmt.Errorf("MemoryHigh of %s: %w", unit, err)
	}
	p, err := m.conn.GetUnitTypePropertyContext(ctx, unit, iface, "MemoryHigh")
	if err != nil {
		return 0, fmt.Errorf("MemoryHigh of %s: %w", unit, m.lost(err))
	}
	v, ok := p.Value.Value().(uint64)
	if !ok {
		return 0, fmt.Errorf("MemoryHigh of %s: unexpected type %s", unit, p.Value.Signature())
	}
	return v, nil
}
