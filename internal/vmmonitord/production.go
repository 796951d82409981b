package vmmonitord

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/vmmonitor"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/policy"
)

// Settings are the vm-monitor's host settings, as given on the command line.
type Settings struct {
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
}

// check refuses settings that cannot work, with ErrConfig.
func (s Settings) check() error {
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

// Main runs the vm-monitor with its production collaborators: it checks s, binds the
// listeners, connects to systemd (the cgroup of s.CgroupUnit, its MemoryHigh=), then
// runs the cgroup watcher and serves the agent (Run) until ctx ends.
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

	watcher := cgroup.NewWatcher(cgroup.UnitDir(mgr, s.CgroupUnit, ""), cgroup.Options{Log: log})
	cache := filecache.New(s.Connstr, log)
	defer cache.Close()
	a := NewAdapter(AdapterOptions{
		Policy: policy.Options{
			Watcher: watcher,
			Limit:   policy.UnitMemoryHigh{Systemd: mgr, Unit: s.CgroupUnit},
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
		Log:        log,
	})
}

// sdNotifier tells systemd through internal/sysd.
type sdNotifier struct{}

func (sdNotifier) Ready(status string) error { return sysd.Ready(status) }
func (sdNotifier) Stopping() error           { return sysd.Stopping() }
