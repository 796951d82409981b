// Command compute-monitor watches a running compute. Without a subcommand (or with
// `activity`) it is compute-monitor.service: its activity (last_active of /status) and
// whether Postgres answers (the downtime metrics), with the systemd watchdog fed after
// each successful check, run in internal/monitord. `compute-monitor vm-monitor` is
// compute-vm-monitor.service: the VM autoscaler agent's peer (internal/vmmonitord). This
// file is the command line.
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/monitord"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/vmmonitord"
)

type cli struct {
	StateDir  string        `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"${COMPUTE_STATE_DIR}" help:"Directory of the shared state record and the applied config."`
	Connstr   string        `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"${COMPUTE_CONNSTR}" help:"How to connect as the admin role (its sessions are not activity; the vm-monitor resizes the LFC with it)."`
	TrimAfter time.Duration `name:"trim-after" env:"COMPUTE_TRIM_AFTER" default:"${COMPUTE_TRIM_AFTER}" help:"After this long (a lifecycle's rounds or a wait for running; the vm-monitor's start or an agent connection) give back the pages of the binary that only start-up used; 0: never."`

	Activity  activityCmd  `cmd:"" default:"withargs" help:"Monitor activity and downtime, LFC prewarm and offload, installed extensions, the audit log clean-up (compute-monitor.service; the default)."`
	VMMonitor vmMonitorCmd `cmd:"" name:"vm-monitor" help:"Serve the VM autoscaler agent: protocol v1.0 over TCP and vsock, memory pressure of the Postgres unit, MemoryHigh= and LFC sizing (compute-vm-monitor.service)."`
}

type activityCmd struct {
	Interval time.Duration `name:"interval" env:"COMPUTE_MONITOR_INTERVAL" default:"${COMPUTE_MONITOR_INTERVAL}" help:"How often to check activity and whether Postgres answers."`
	ExtStats time.Duration `name:"installed-extensions-collection-interval" env:"COMPUTE_INSTALLED_EXTENSIONS_INTERVAL" default:"${COMPUTE_INSTALLED_EXTENSIONS_INTERVAL}" help:"Base interval of the installed extensions collection when the spec's suspend_timeout_seconds is -1 or 0 (collections are twice it apart)."`
	PGData   string        `short:"D" name:"pgdata" env:"PGDATA" default:"${PGDATA}" help:"Postgres data directory: with compliance audit, the audit files in its log directory older than 15 minutes are deleted every 60 s."`
}

type vmMonitorCmd struct {
	Autoscaling string `name:"autoscaling" env:"AUTOSCALING" default:"${AUTOSCALING}" help:"Run only when this says true (bare or quoted), as AUTOSCALING=true in /etc/default/compute-tools does on autoscaled VMs; anything else refuses to run (exit 78)."`
	Addr        string `name:"addr" env:"COMPUTE_VM_MONITOR_ADDR" default:"${COMPUTE_VM_MONITOR_ADDR}" help:"TCP address the agent dials (host:port); empty: no TCP listener."`
	VsockPort   uint32 `name:"vsock-port" env:"COMPUTE_VM_MONITOR_VSOCK_PORT" default:"${COMPUTE_VM_MONITOR_VSOCK_PORT}" help:"vsock port to listen on as well; 0: none. A vsock listener that cannot be opened is a warning."`
	CgroupUnit  string `name:"cgroup-unit" env:"COMPUTE_VM_MONITOR_CGROUP_UNIT" default:"${COMPUTE_VM_MONITOR_CGROUP_UNIT}" help:"Unit whose cgroup memory is watched and whose MemoryHigh= is set through systemd."`
}

// exitConfig is EX_CONFIG (sysexits.h): the configuration cannot work, so a restart would
// fail the same way; the units' RestartPreventExitStatus=78 keeps systemd from restarting
// them twice a second forever (a watchdog restart is a signal, not this code).
const exitConfig = 78

// exitCode maps Run's error to the exit status: EX_CONFIG for a configuration error, 1
// for anything else (restarted by the unit).
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, monitord.ErrConfig), errors.Is(err, vmmonitord.ErrConfig):
		return exitConfig
	}
	return 1
}

// cliExitCode maps kong's exit status: a command line (or environment) it cannot parse
// is a configuration error; --help exits 0.
func cliExitCode(code int) int {
	if code != 0 {
		return exitConfig
	}
	return 0
}

// trimAfter maps the flag (0: never) to the settings' (0: the default, negative: never).
func trimAfter(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

func main() {
	var c cli
	k := kong.Parse(&c, kong.Name("compute-monitor"), kong.Vars(paths.Vars()),
		kong.Description("Monitors of a serverless Postgres compute (Neon compute_ctl compatible): activity and downtime (the default command), and the VM autoscaler agent's vm-monitor."),
		kong.UsageOnError(), kong.Exit(func(code int) { os.Exit(cliExitCode(code)) }))
	vm := k.Command() == "vm-monitor"
	component := "compute-monitor"
	if vm {
		component = "compute-vm-monitor"
	}
	log := logx.Setup(os.Stderr, component)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if vm {
		err = vmmonitord.Main(ctx, vmmonitord.Settings{
			Autoscaling: c.VMMonitor.Autoscaling, Addr: c.VMMonitor.Addr, VsockPort: c.VMMonitor.VsockPort,
			CgroupUnit: c.VMMonitor.CgroupUnit, Connstr: c.Connstr, StateDir: c.StateDir,
			TrimAfter: trimAfter(c.TrimAfter),
		}, log)
	} else {
		err = monitord.Main(ctx, monitord.Settings{StateDir: c.StateDir, Connstr: c.Connstr, Interval: c.Activity.Interval,
			ExtStatsInterval: c.Activity.ExtStats, TrimAfter: trimAfter(c.TrimAfter), PGData: c.Activity.PGData}, log)
	}
	if err != nil {
		log.Error(component+" failed", "err", err)
		os.Exit(exitCode(err))
	}
}
