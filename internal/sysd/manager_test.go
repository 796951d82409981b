package sysd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/computetools/compute-tools/internal/bus/bustest"
)

func TestWaitJob(t *testing.T) {
	tests := []struct {
		result  string
		wantErr string
	}{
		{"done", ""},
		{"failed", `start compute-postgres.service: job result "failed"`},
		{"canceled", `start compute-postgres.service: job result "canceled"`},
		{"timeout", `start compute-postgres.service: job result "timeout"`},
		{"dependency", `start compute-postgres.service: job result "dependency"`},
		{"skipped", `start compute-postgres.service: job result "skipped"`},
	}
	for _, tt := range tests {
		t.Run(tt.result, func(t *testing.T) {
			ch := make(chan string, 1)
			ch <- tt.result
			err := waitJob(context.Background(), "start", "compute-postgres.service", ch)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("waitJob(%q) = %v, want nil", tt.result, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("waitJob(%q) = %v, want %q", tt.result, err, tt.wantErr)
			}
			var je *JobError
			if !errors.As(err, &je) || je.Result != tt.result || je.Op != "start" || je.Unit != "compute-postgres.service" {
				t.Errorf("error %v is not the JobError %+v", err, je)
			}
		})
	}

	t.Run("context canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := waitJob(ctx, "stop", "compute-postgres.service", make(chan string))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("waitJob = %v, want context.Canceled", err)
		}
		if want := "stop compute-postgres.service: wait for job: context canceled"; err.Error() != want {
			t.Errorf("error = %q, want %q", err, want)
		}
	})
	t.Run("channel closed", func(t *testing.T) {
		ch := make(chan string)
		close(ch)
		if err := waitJob(context.Background(), "restart", "x.service", ch); err == nil {
			t.Fatal("waitJob on a closed channel = nil, want an error")
		}
	})
}

// fakeSystemd answers the part of org.freedesktop.systemd1.Manager that Manager uses,
// on a private bus, and finishes every job with the result configured for its unit.
type fakeSystemd struct {
	conn    *godbus.Conn
	results map[string]string // unit -> job result; missing unit -> NoSuchUnit
	props   map[string]map[string]godbus.Variant
	onJob   func(unit string) // called when a job is enqueued
	// denied: units whose SetUnitProperties is refused, with the D-Bus error name.
	denied map[string]string

	mu    sync.Mutex
	calls []string
	jobID uint32
}

func (f *fakeSystemd) job(method, name, mode string) (godbus.ObjectPath, *godbus.Error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %s", method, name, mode))
	res, ok := f.results[name]
	f.jobID++
	id := f.jobID
	f.mu.Unlock()
	if !ok {
		return "", godbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	path := godbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	if f.onJob != nil {
		f.onJob(name)
	}
	if res != "" { // "" leaves the job running forever
		go func() {
			// Emitted after our reply is queued on the same connection, as systemd does.
			_ = f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, path, name, res)
		}()
	}
	return path, nil
}

func (f *fakeSystemd) StartUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return f.job("StartUnit", name, mode)
}

func (f *fakeSystemd) StopUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return f.job("StopUnit", name, mode)
}

func (f *fakeSystemd) RestartUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return f.job("RestartUnit", name, mode)
}

func (f *fakeSystemd) KillUnit(name, who string, sig int32) *godbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("KillUnit %s %s %d", name, who, sig))
	return nil
}

// SetUnitProperties records the call and stores the properties on the unit's
// Service interface, so that a Get reads them back.
func (f *fakeSystemd) SetUnitProperties(name string, runtime bool, props []sddbus.Property) *godbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	unit, ok := f.props[name]
	if !ok {
		return godbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not loaded."})
	}
	if deny, ok := f.denied[name]; ok {
		// What systemd answers when polkit says no (or would have to ask).
		return godbus.NewError(deny, []any{"Interactive authentication required."})
	}
	for _, p := range props {
		f.calls = append(f.calls, fmt.Sprintf("SetUnitProperties %s runtime=%v %s=%v", name, runtime, p.Name, p.Value))
		unit["org.freedesktop.systemd1.Service."+p.Name] = p.Value
	}
	return nil
}

// unitProps serves org.freedesktop.DBus.Properties.Get on one unit object.
type unitProps struct {
	mu    *sync.Mutex
	props map[string]godbus.Variant // "interface.property" -> value
}

func (u unitProps) Get(iface, prop string) (godbus.Variant, *godbus.Error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v, ok := u.props[iface+"."+prop]
	if !ok {
		return godbus.Variant{}, godbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{"no " + prop})
	}
	return v, nil
}

func startFakeSystemd(t *testing.T, f *fakeSystemd) *Manager {
	t.Helper()
	addr := startFakeBus(t, f)
	m, err := NewManagerWithDialer(func() (*godbus.Conn, error) { return godbus.Connect(addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// startFakeBus starts a private bus where f owns org.freedesktop.systemd1, and returns
// the bus's address.
func startFakeBus(t *testing.T, f *fakeSystemd) string {
	t.Helper()
	addr := bustest.StartSession(t)
	conn, err := godbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.conn = conn
	if err := conn.Export(f, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	for unit, props := range f.props {
		path := godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(unit))
		if err := conn.Export(unitProps{&f.mu, props}, path, "org.freedesktop.DBus.Properties"); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := conn.RequestName("org.freedesktop.systemd1", godbus.NameFlagDoNotQueue); err != nil || r != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", r, err)
	}
	return addr
}

// cutProxy forwards connections on a unix socket to another until cut, which closes
// them all: to the client, the bus went away.
type cutProxy struct {
	mu    sync.Mutex
	conns []net.Conn
	ln    net.Listener
}

func startCutProxy(t *testing.T, busAddr string) (*cutProxy, string) {
	t.Helper()
	target, ok := strings.CutPrefix(busAddr, "unix:path=")
	if !ok {
		t.Fatalf("bus address %q is not a unix path", busAddr)
	}
	sock := filepath.Join(t.TempDir(), "proxy")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
	return p, "unix:path=" + sock
}

func (p *cutProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestManagerDisconnected: once the connection to systemd is gone, the calls fail with
// ErrDisconnected (the vm-monitor exits on it); before, a failing call is not marked.
func TestManagerDisconnected(t *testing.T) {
	f := &fakeSystemd{
		results: map[string]string{},
		props: map[string]map[string]godbus.Variant{
			"compute-postgres.service": {
				"org.freedesktop.systemd1.Service.ControlGroup": godbus.MakeVariant("/system.slice/compute-postgres.service"),
				"org.freedesktop.systemd1.Service.MemoryHigh":   godbus.MakeVariant(uint64(MemoryHighInfinity)),
			},
		},
	}
	proxy, addr := startCutProxy(t, startFakeBus(t, f))
	m, err := NewManagerWithDialer(func() (*godbus.Conn, error) { return godbus.Connect(addr) })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if cg, err := m.ControlGroup(ctx, "compute-postgres.service"); err != nil || cg == "" {
		t.Fatalf("ControlGroup = %q, %v", cg, err)
	}
	if err := m.SetMemoryHigh(ctx, "gone.service", 1<<30); err == nil || errors.Is(err, ErrDisconnected) {
		t.Errorf("SetMemoryHigh of an unknown unit = %v, want an error that is not ErrDisconnected", err)
	}
	if !m.Connected() {
		t.Fatal("not connected before the cut")
	}

	proxy.cut()
	// godbus notices the end of the stream in its reader goroutine.
	for deadline := time.Now().Add(10 * time.Second); m.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still connected 10 s after the bus went away")
		}
	}
	err = m.SetMemoryHigh(ctx, "compute-postgres.service", 1<<30)
	if !errors.Is(err, ErrDisconnected) {
		t.Errorf("SetMemoryHigh after the bus went away = %v, want ErrDisconnected", err)
	}
	if _, err := m.ControlGroup(ctx, "compute-postgres.service"); !errors.Is(err, ErrDisconnected) {
		t.Errorf("ControlGroup after the bus went away = %v, want ErrDisconnected", err)
	}
	if err := m.StartUnit(ctx, "compute-postgres.service"); !errors.Is(err, ErrDisconnected) {
		t.Errorf("StartUnit after the bus went away = %v, want ErrDisconnected", err)
	}
}

func TestManagerJobsOverBus(t *testing.T) {
	f := &fakeSystemd{results: map[string]string{
		"compute-postgres.service":  "done",
		"compute-configure.service": "failed",
		"compute-init.service":      "dependency",
	}}
	m := startFakeSystemd(t, f)
	ctx := context.Background()

	tests := []struct {
		name    string
		op      func(context.Context, string) error
		unit    string
		wantErr string
	}{
		{"start done", m.StartUnit, "compute-postgres.service", ""},
		{"stop done", m.StopUnit, "compute-postgres.service", ""},
		{"restart done", m.RestartUnit, "compute-postgres.service", ""},
		{"restart failed", m.RestartUnit, "compute-configure.service", `restart compute-configure.service: job result "failed"`},
		{"start dependency", m.StartUnit, "compute-init.service", `start compute-init.service: job result "dependency"`},
		{"no such unit", m.StartUnit, "nope.service", "start nope.service: Unit nope.service not found."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op(ctx, tt.unit)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{
		"StartUnit compute-postgres.service replace",
		"StopUnit compute-postgres.service replace",
		"RestartUnit compute-postgres.service replace",
		"RestartUnit compute-configure.service replace",
		"StartUnit compute-init.service replace",
		"StartUnit nope.service replace",
	}
	if fmt.Sprint(f.calls) != fmt.Sprint(want) {
		t.Errorf("calls = %q, want %q", f.calls, want)
	}
}

func TestManagerJobHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The job never finishes; the context is canceled once systemd has accepted it.
	f := &fakeSystemd{results: map[string]string{"hang.service": ""}, onJob: func(string) { cancel() }}
	m := startFakeSystemd(t, f)
	err := m.StartUnit(ctx, "hang.service")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StartUnit = %v, want context.Canceled", err)
	}
}

func TestManagerKillAndProperties(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.UTC)
	f := &fakeSystemd{
		results: map[string]string{},
		props: map[string]map[string]godbus.Variant{
			"compute-postgres.service": {
				"org.freedesktop.systemd1.Unit.ActiveState":               godbus.MakeVariant("active"),
				"org.freedesktop.systemd1.Unit.ActiveEnterTimestamp":      godbus.MakeVariant(uint64(start.Add(time.Second).UnixMicro())),
				"org.freedesktop.systemd1.Service.ExecMainStartTimestamp": godbus.MakeVariant(uint64(start.UnixMicro())),
			},
			"compute-configure.service": {
				"org.freedesktop.systemd1.Unit.ActiveState":               godbus.MakeVariant("inactive"),
				"org.freedesktop.systemd1.Unit.ActiveEnterTimestamp":      godbus.MakeVariant(uint64(0)),
				"org.freedesktop.systemd1.Service.ExecMainStartTimestamp": godbus.MakeVariant(uint64(0)),
			},
			"odd.service": {
				"org.freedesktop.systemd1.Unit.ActiveState":               godbus.MakeVariant(uint32(1)),
				"org.freedesktop.systemd1.Service.ExecMainStartTimestamp": godbus.MakeVariant("yesterday"),
			},
		},
	}
	m := startFakeSystemd(t, f)
	ctx := context.Background()

	if err := m.KillUnit(ctx, "compute-postgres.service", "main", syscall.SIGINT); err != nil {
		t.Fatalf("KillUnit main: %v", err)
	}
	if err := m.KillUnit(ctx, "compute-postgres.service", "all", syscall.SIGKILL); err != nil {
		t.Fatalf("KillUnit all: %v", err)
	}
	if err := m.KillUnit(ctx, "compute-postgres.service", "everyone", syscall.SIGKILL); err == nil {
		t.Error("KillUnit with an invalid target succeeded")
	}
	f.mu.Lock()
	wantCalls := fmt.Sprint([]string{"KillUnit compute-postgres.service main 2", "KillUnit compute-postgres.service all 9"})
	if got := fmt.Sprint(f.calls); got != wantCalls {
		t.Errorf("calls = %s, want %s", got, wantCalls)
	}
	f.mu.Unlock()

	for unit, want := range map[string]string{"compute-postgres.service": "active", "compute-configure.service": "inactive"} {
		got, err := m.ActiveState(ctx, unit)
		if err != nil || got != want {
			t.Errorf("ActiveState(%s) = %q, %v; want %q", unit, got, err, want)
		}
	}
	if _, err := m.ActiveState(ctx, "odd.service"); err == nil {
		t.Error("ActiveState with a non-string value succeeded")
	}
	if _, err := m.ActiveState(ctx, "unknown.service"); err == nil {
		t.Error("ActiveState of an unknown unit succeeded")
	}

	execStart, activeEnter, err := m.UnitTimestamps(ctx, "compute-postgres.service")
	if err != nil {
		t.Fatal(err)
	}
	if !execStart.Equal(start) || !activeEnter.Equal(start.Add(time.Second)) {
		t.Errorf("UnitTimestamps = %v, %v; want %v, %v", execStart, activeEnter, start, start.Add(time.Second))
	}
	execStart, activeEnter, err = m.UnitTimestamps(ctx, "compute-configure.service")
	if err != nil || !execStart.IsZero() || !activeEnter.IsZero() {
		t.Errorf("UnitTimestamps of a never-started unit = %v, %v, %v; want zero times", execStart, activeEnter, err)
	}
	if _, _, err := m.UnitTimestamps(ctx, "odd.service"); err == nil {
		t.Error("UnitTimestamps with a string value succeeded")
	}
}

// TestRealSystemd exercises the system's systemd read-only, when there is one.
func TestRealSystemd(t *testing.T) {
	if _, err := os.Stat("/run/systemd/private"); err != nil {
		t.Skip("no running systemd (/run/systemd/private missing); the nspawn system test covers it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	m, err := NewManager(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st, err := m.ActiveState(context.Background(), "basic.target")
	if err != nil || st == "" {
		t.Fatalf("ActiveState(basic.target) = %q, %v", st, err)
	}
}

func TestHasStartJob(t *testing.T) {
	jobs := []sddbus.JobStatus{
		{Unit: "compute-postgres.service", JobType: "start"},
		{Unit: "compute-init.service", JobType: "stop"},
	}
	if hasStartJob(jobs, "compute-init.service") {
		t.Error("a stop job counted as a start")
	}
	if !hasStartJob(jobs, "compute-postgres.service") {
		t.Error("start job not seen")
	}
	if !hasStartJob([]sddbus.JobStatus{{Unit: "x", JobType: "restart"}}, "x") {
		t.Error("restart job not seen")
	}
	if hasStartJob(nil, "x") {
		t.Error("no jobs, yet a start")
	}
}

func TestManagerControlGroupAndMemoryHigh(t *testing.T) {
	f := &fakeSystemd{
		results: map[string]string{},
		props: map[string]map[string]godbus.Variant{
			"compute-postgres.service": {
				"org.freedesktop.systemd1.Service.ControlGroup": godbus.MakeVariant("/system.slice/compute-postgres.service"),
				"org.freedesktop.systemd1.Service.MemoryHigh":   godbus.MakeVariant(uint64(MemoryHighInfinity)),
			},
			"stopped.service": {
				"org.freedesktop.systemd1.Service.ControlGroup": godbus.MakeVariant(""),
			},
			"odd.service": {
				"org.freedesktop.systemd1.Service.ControlGroup": godbus.MakeVariant(uint32(7)),
				"org.freedesktop.systemd1.Service.MemoryHigh":   godbus.MakeVariant("lots"),
			},
			"postgres.scope": {
				"org.freedesktop.systemd1.Scope.ControlGroup": godbus.MakeVariant("/machine.slice/postgres.scope"),
			},
		},
	}
	m := startFakeSystemd(t, f)
	ctx := context.Background()

	for unit, want := range map[string]string{
		"compute-postgres.service": "/system.slice/compute-postgres.service",
		"stopped.service":          "",
		"postgres.scope":           "/machine.slice/postgres.scope", // the Scope interface, not Service
	} {
		got, err := m.ControlGroup(ctx, unit)
		if err != nil || got != want {
			t.Errorf("ControlGroup(%s) = %q, %v; want %q", unit, got, err, want)
		}
	}
	for _, unit := range []string{"odd.service", "unknown.service", "compute.target", "nosuffix"} {
		if got, err := m.ControlGroup(ctx, unit); err == nil {
			t.Errorf("ControlGroup(%s) = %q, want an error", unit, got)
		}
	}

	if got, err := m.MemoryHigh(ctx, "compute-postgres.service"); err != nil || got != MemoryHighInfinity {
		t.Errorf("MemoryHigh before = %d, %v; want infinity", got, err)
	}
	if err := m.SetMemoryHigh(ctx, "compute-postgres.service", 1736232140); err != nil {
		t.Fatalf("SetMemoryHigh: %v", err)
	}
	if got, err := m.MemoryHigh(ctx, "compute-postgres.service"); err != nil || got != 1736232140 {
		t.Errorf("MemoryHigh after = %d, %v; want 1736232140", got, err)
	}
	if err := m.SetMemoryHigh(ctx, "compute-postgres.service", MemoryHighInfinity); err != nil {
		t.Fatalf("SetMemoryHigh(infinity): %v", err)
	}
	err := m.SetMemoryHigh(ctx, "gone.service", 1<<30)
	if err == nil || err.Error() != "set MemoryHigh of gone.service: Unit gone.service not loaded." || errors.Is(err, ErrAccessDenied) {
		t.Errorf("SetMemoryHigh of an unknown unit = %v", err)
	}
	// polkit's refusals (no rule for the unit) are marked ErrAccessDenied.
	for _, name := range []string{"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", "org.freedesktop.DBus.Error.AccessDenied"} {
		f.mu.Lock()
		f.props["other.service"] = map[string]godbus.Variant{}
		f.denied = map[string]string{"other.service": name}
		f.mu.Unlock()
		err = m.SetMemoryHigh(ctx, "other.service", 1<<30)
		if !errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "other.service") {
			t.Errorf("SetMemoryHigh refused with %s = %v, want ErrAccessDenied", name, err)
		}
	}
	if _, err := m.MemoryHigh(ctx, "odd.service"); err == nil {
		t.Error("MemoryHigh with a string value succeeded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Runtime only (the D-Bus "runtime" flag true), and the value a uint64 ("t").
	want := []string{
		"SetUnitProperties compute-postgres.service runtime=true MemoryHigh=@t 1736232140",
		"SetUnitProperties compute-postgres.service runtime=true MemoryHigh=@t 18446744073709551615",
	}
	if fmt.Sprint(f.calls) != fmt.Sprint(want) {
		t.Errorf("calls = %q, want %q", f.calls, want)
	}
}

// TestRealSystemdMemoryHigh runs a transient service under the system's systemd, reads
// its control group and sets its MemoryHigh= at runtime, when there is a systemd.
func TestRealSystemdMemoryHigh(t *testing.T) {
	if _, err := os.Stat("/run/systemd/private"); err != nil {
		t.Skip("no running systemd (/run/systemd/private missing); the nspawn system test covers it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := NewManager(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	unit := fmt.Sprintf("compute-tools-sysd-test-%d.service", os.Getpid())
	ch := make(chan string, 1)
	props := []sddbus.Property{
		sddbus.PropDescription("compute-tools sysd test"),
		sddbus.PropExecStart([]string{"/bin/sleep", "300"}, false),
	}
	if _, err := m.conn.StartTransientUnitContext(ctx, unit, "replace", props, ch); err != nil {
		t.Fatalf("start transient %s: %v", unit, err)
	}
	t.Cleanup(func() { _ = m.StopUnit(context.Background(), unit) })
	if err := waitJob(ctx, "start", unit, ch); err != nil {
		t.Fatal(err)
	}

	cg, err := m.ControlGroup(ctx, unit)
	if err != nil || !strings.HasSuffix(cg, "/"+unit) {
		t.Fatalf("ControlGroup(%s) = %q, %v; want a path ending in /%s", unit, cg, err, unit)
	}
	if err := m.SetMemoryHigh(ctx, unit, 64<<20); err != nil {
		t.Fatal(err)
	}
	if got, err := m.MemoryHigh(ctx, unit); err != nil || got != 64<<20 {
		t.Errorf("MemoryHigh = %d, %v; want %d", got, err, 64<<20)
	}
	// On a unified hierarchy, systemd wrote the cgroup's memory.high.
	if b, err := os.ReadFile("/sys/fs/cgroup" + cg + "/memory.high"); err == nil {
		if got := strings.TrimSpace(string(b)); got != "67108864" {
			t.Errorf("memory.high = %q, want 67108864", got)
		}
	} else {
		t.Logf("no cgroup v2 memory.high to check: %v", err)
	}
	if err := m.SetMemoryHigh(ctx, unit, MemoryHighInfinity); err != nil {
		t.Fatal(err)
	}
	if got, err := m.MemoryHigh(ctx, unit); err != nil || got != MemoryHighInfinity {
		t.Errorf("MemoryHigh after infinity = %d, %v", got, err)
	}
}

// TestManagerQueueStopAndPowerOff: both return once the job is queued (the fake never
// finishes these jobs), with the modes systemctl uses; errors are passed on.
func TestManagerQueueStopAndPowerOff(t *testing.T) {
	f := &fakeSystemd{results: map[string]string{"compute.target": "", PowerOffTarget: ""}}
	m := startFakeSystemd(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.QueueStop(ctx, "compute.target"); err != nil {
		t.Fatal(err)
	}
	if err := m.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.QueueStop(ctx, "nope.target"); err == nil || err.Error() != "stop nope.target: Unit nope.target not found." {
		t.Errorf("QueueStop of an unknown unit = %v", err)
	}
	f.mu.Lock()
	got := strings.Join(f.calls, ",")
	f.mu.Unlock()
	if want := "StopUnit compute.target replace,StartUnit poweroff.target replace-irreversibly,StopUnit nope.target replace"; got != want {
		t.Errorf("calls\n got %s\nwant %s", got, want)
	}
}
