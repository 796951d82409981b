package vmmonitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/memtrim"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/vmmonitor"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/policy"
)

// Settings are the vm-monitor's host settings, as given on the command line.
type Settings struct {
	// Autoscaling is the AUTOSCALING variable (/etc/default/compute-tools, read by the
	// unit): the vm-monitor runs only when it says true (AutoscalingOn).
	Autoscaling string
	// Addr is the TCP listen address (host:port); "": no TCP listener.
	Addr string
	// VsockPort is the vsock port; 0: no vsock listener.
	VsockPort uint32
	// CgroupUnit is the systemd unit whose cgroup memory is watched and whose
	// MemoryHigh= is set (compute-postgres.service).
	CgroupUnit string
	// Connstr is the admin connection; the file cache connection uses it with
	// application_name vm-monitor.
	Connstr string
	// StateDir holds the applied config (its spec's disable_lfc_resizing).
	StateDir string
	// TrimAfter: see Deps.TrimAfter (0: DefaultTrimAfter, negative: never).
	TrimAfter time.Duration
}

// AutoscalingOn reads the AUTOSCALING value as the compute-tools generator reads the
// line: blanks and a CR at the end are ignored, and it must say true, bare or in double
// or single quotes (systemd's EnvironmentFile= has taken the quotes off already; a shell
// may not have). Anything else (false, yes, 1, empty) is off.
func AutoscalingOn(v string) bool {
	switch strings.TrimRight(v, " \t\r") {
	case "true", `"true"`, "'true'":
		return true
	}
	return false
}

// check refuses settings that cannot work, with ErrConfig.
func (s Settings) check() error {
	if !AutoscalingOn(s.Autoscaling) {
		return fmt.Errorf("%w: AUTOSCALING is %q, not true: the vm-monitor runs only on autoscaled VMs (AUTOSCALING=true in /etc/default/compute-tools, or /etc/sysconfig/compute-tools from the .rpm); not starting", ErrConfig, s.Autoscaling)
	}
	if s.Addr == "" && s.VsockPort == 0 {
		return fmt.Errorf("%w: no listener: --addr (COMPUTE_VM_MONITOR_ADDR) is empty and --vsock-port (COMPUTE_VM_MONITOR_VSOCK_PORT) is 0", ErrConfig)
	}
	if s.Addr != "" {
		_, port, err := net.SplitHostPort(s.Addr)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			return fmt.Errorf("%w: --addr (COMPUTE_VM_MONITOR_ADDR) %q is not host:port: %w", ErrConfig, s.Addr, err)
		}
	}
	if !hasCgroup(s.CgroupUnit) {
		return fmt.Errorf("%w: --cgroup-unit (COMPUTE_VM_MONITOR_CGROUP_UNIT) %q is not the name of a service, scope or slice", ErrConfig, s.CgroupUnit)
	}
	if _, err := pg.Config(s.Connstr, filecache.AppName); err != nil {
		return fmt.Errorf("%w: --connstr: %w", ErrConfig, err)
	}
	return nil
}

// hasCgroup says whether unit names a unit with a cgroup of its own that MemoryHigh=
// applies to.
func hasCgroup(unit string) bool {
	for _, suffix := range []string{".service", ".scope", ".slice"} {
		if name, ok := strings.CutSuffix(unit, suffix); ok && name != "" && !strings.ContainsAny(name, "/ \t\n") {
			return true
		}
	}
	return false
}

// listeners opens the listeners of s: TCP, then vsock through listenVsock. A vsock
// listener that cannot be opened is a warning; no listener at all is ErrConfig. A TCP
// address that cannot be bound (in use) is an error, not ErrConfig: a restart may find
// it free.
func listeners(s Settings, listenVsock func(port uint32) (net.Listener, error), log *slog.Logger) ([]net.Listener, error) {
	var lns []net.Listener
	if s.Addr != "" {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", s.Addr, err)
		}
		lns = append(lns, ln)
	}
	if s.VsockPort != 0 {
		ln, err := listenVsock(s.VsockPort)
		if err != nil {
			log.Warn("no vsock listener; the agent can reach the vm-monitor over TCP only", "vsock_port", s.VsockPort, "tcp", s.Addr, "err", err)
		} else {
			lns = append(lns, ln)
		}
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("%w: no listener: the vsock listener could not be opened and --addr (COMPUTE_VM_MONITOR_ADDR) is empty", ErrConfig)
	}
	return lns, nil
}

// Main runs the vm-monitor with its production collaborators: it checks s (AUTOSCALING
// first), binds the listeners, connects to systemd (the cgroup of s.CgroupUnit, its
// MemoryHigh=), then runs the cgroup watcher and serves the agent (Run) until ctx ends
// or the connection to systemd is lost (an error).
func Main(ctx context.Context, s Settings, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if err := s.check(); err != nil {
		return err
	}
	lns, err := listeners(s, vmmonitor.ListenVsock, log)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	mgr, err := sysd.NewManager(ctx)
	if err != nil {
		closeAll()
		return err
	}
	defer mgr.Close()
	sd := newLossWatch(mgr, log)

	watcher := cgroup.NewWatcher(cgroup.UnitDir(sd, s.CgroupUnit, ""), cgroup.Options{Log: log})
	cache := filecache.New(s.Connstr, log)
	defer cache.Close()
	a := NewAdapter(AdapterOptions{
		Policy: policy.Options{
			Watcher: watcher,
			Limit:   policy.UnitMemoryHigh{Systemd: sd, Unit: s.CgroupUnit},
			Log:     log,
		},
		FileCache:           cache,
		LFCResizingDisabled: AppliedSpecDisablesLFC(s.StateDir),
		Log:                 log,
	})
	log.Info("vm-monitor started", "cgroup_unit", s.CgroupUnit, "tcp", s.Addr, "vsock_port", s.VsockPort)
	return Run(ctx, Deps{
		Listeners:  lns,
		Policy:     a,
		Background: []func(context.Context){func(ctx context.Context) { _ = watcher.Run(ctx) }},
		Notifier:   sdNotifier{},
		Fatal:      sd.lost,
		Log:        log,
		Trim:       func() { memtrim.TrimLogged(log) },
		TrimAfter:  s.TrimAfter,
	})
}

// systemdAPI is what the vm-monitor asks of systemd (*sysd.Manager).
type systemdAPI interface {
	cgroup.UnitResolver
	policy.UnitMemorySetter
}

// lossWatch passes the calls to systemd through and reports, once, on lost the first
// error that says the connection is gone (sysd.ErrDisconnected): the Manager does not
// reconnect, so Run ends and the unit's Restart= brings a new process and connection.
// It also logs, once, systemd's refusal to set MemoryHigh= (polkit's answer: the rule
// lets compute-vm-monitor set properties of compute-postgres.service only).
type lossWatch struct {
	sd   systemdAPI
	lost chan error
	once sync.Once
	log  *slog.Logger
	// denied: the refusal has been explained (once; each failure is still an error of
	// the request that caused it).
	denied sync.Once
}

func newLossWatch(sd systemdAPI, log *slog.Logger) *lossWatch {
	return &lossWatch{sd: sd, lost: make(chan error, 1), log: log}
}

func (w *lossWatch) check(err error) error {
	if errors.Is(err, sysd.ErrDisconnected) {
		w.once.Do(func() { w.lost <- err })
	}
	return err
}

// ControlGroup implements cgroup.UnitResolver.
func (w *lossWatch) ControlGroup(ctx context.Context, unit string) (string, error) {
	cg, err := w.sd.ControlGroup(ctx, unit)
	return cg, w.check(err)
}

// SetMemoryHigh implements policy.UnitMemorySetter.
func (w *lossWatch) SetMemoryHigh(ctx context.Context, unit string, bytes uint64) error {
	err := w.sd.SetMemoryHigh(ctx, unit, bytes)
	if errors.Is(err, sysd.ErrAccessDenied) {
		w.denied.Do(func() {
			w.log.Warn("systemd refused to set MemoryHigh= of the unit: the polkit rule "+PolkitRule+
				" lets compute-vm-monitor set properties of "+paths.UnitPostgres+" only; add a rule for this unit or unset COMPUTE_VM_MONITOR_CGROUP_UNIT",
				"unit", unit, "rule", PolkitRule, "err", err)
		})
	}
	return w.check(err)
}

// PolkitRule is the polkit rule that lets the vm-monitor's user set properties of
// compute-postgres.service (packaging/polkit).
const PolkitRule = "/usr/share/polkit-1/rules.d/50-compute-tools.rules"

// sdNotifier tells systemd through internal/sysd.
type sdNotifier struct{}

func (sdNotifier) Ready(status string) error { return sysd.Ready(status) }
func (sdNotifier) Stopping() error           { return sysd.Stopping() }
