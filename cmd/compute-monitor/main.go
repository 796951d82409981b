// Command compute-monitor watches a running compute (unit compute-monitor.service): its
// activity (last_active of /status) and whether Postgres answers (the downtime metrics),
// with the systemd watchdog fed after each successful check. It runs in
// internal/monitord; this file is the command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/monitord"
	"github.com/computetools/compute-tools/internal/paths"
)

type cli struct {
	StateDir string        `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"${COMPUTE_STATE_DIR}" help:"Directory of the shared state record."`
	Connstr  string        `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"${COMPUTE_CONNSTR}" help:"How to connect as the admin role (its sessions are not activity)."`
	Interval time.Duration `name:"interval" env:"COMPUTE_MONITOR_INTERVAL" default:"${COMPUTE_MONITOR_INTERVAL}" help:"How often to check activity and whether Postgres answers."`
}

func main() {
	log := logx.Setup(os.Stderr, "compute-monitor")
	var c cli
	kong.Parse(&c, kong.Name("compute-monitor"), kong.Vars(paths.Vars()),
		kong.Description("Activity and downtime monitor of a serverless Postgres compute (Neon compute_ctl compatible)."),
		kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := monitord.Main(ctx, monitord.Settings{StateDir: c.StateDir, Connstr: c.Connstr, Interval: c.Interval}, log); err != nil {
		log.Error("compute-monitor failed", "err", err)
		os.Exit(1)
	}
}
