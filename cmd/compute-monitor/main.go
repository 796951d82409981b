// Command compute-monitor watches a running compute (unit compute-monitor.service): its
// activity (last_active of /status) and whether Postgres answers (the downtime metrics),
// with the systemd watchdog fed after each successful check. It runs in
// internal/monitord; this file is the command line.
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
	"github.com/computetools/compute-tools/internal/memtrim"
	"github.com/computetools/compute-tools/internal/monitord"
	"github.com/computetools/compute-tools/internal/paths"
)

type cli struct {
	StateDir string        `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"${COMPUTE_STATE_DIR}" help:"Directory of the shared state record."`
	Connstr  string        `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"${COMPUTE_CONNSTR}" help:"How to connect as the admin role (its sessions are not activity)."`
	Interval time.Duration `name:"interval" env:"COMPUTE_MONITOR_INTERVAL" default:"${COMPUTE_MONITOR_INTERVAL}" help:"How often to check activity and whether Postgres answers."`
	ExtStats time.Duration `name:"installed-extensions-collection-interval" env:"COMPUTE_INSTALLED_EXTENSIONS_INTERVAL" default:"${COMPUTE_INSTALLED_EXTENSIONS_INTERVAL}" help:"Base interval of the installed extensions collection when the spec's suspend_timeout_seconds is -1 or 0 (collections are twice it apart)."`
}

// exitConfig is EX_CONFIG (sysexits.h): the configuration cannot work, so a restart would
// fail the same way; the unit's RestartPreventExitStatus=78 keeps systemd from restarting
// the monitor twice a second forever (a watchdog restart is a signal, not this code).
const exitConfig = 78

// exitCode maps Run's error to the exit status: EX_CONFIG for a configuration error, 1
// for anything else (restarted by the unit).
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, monitord.ErrConfig):
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

func main() {
	log := logx.Setup(os.Stderr, "compute-monitor")
	var c cli
	kong.Parse(&c, kong.Name("compute-monitor"), kong.Vars(paths.Vars()),
		kong.Description("Activity and downtime monitor of a serverless Postgres compute (Neon compute_ctl compatible)."),
		kong.UsageOnError(), kong.Exit(func(code int) { os.Exit(cliExitCode(code)) }))
	// The monitor lives as long as the compute and runs a small part of its binary: keep
	// only the pages it uses mapped (bench/README.md has the figures).
	if r, err := memtrim.TrimExecutable(); err != nil {
		log.Debug("memtrim", "err", err)
	} else {
		log.Debug("trimmed the executable's mappings", "mappings", r.Mappings, "bytes", r.Bytes)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := monitord.Main(ctx, monitord.Settings{StateDir: c.StateDir, Connstr: c.Connstr, Interval: c.Interval, ExtStatsInterval: c.ExtStats}, log); err != nil {
		log.Error("compute-monitor failed", "err", err)
		os.Exit(exitCode(err))
	}
}
