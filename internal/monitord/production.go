package monitord

import (
	"context"
	"log/slog"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/sysd"
)

// Main runs compute-monitor with its production collaborators: the state store in
// s.StateDir, a best-effort D-Bus connection (its StatusChanged signals wake the waits),
// sd_notify, and systemd's watchdog interval from the environment (WATCHDOG_USEC). On the
// bus it also serves the LFC object (bus.LFCPath, under bus.MonitorBusName). The
// store announces nothing (no OnChange): the monitor's writes (last_active, downtime) never
// change the status, and a signal for each would wake every waiter of the compute once a
// second.
func Main(ctx context.Context, s Settings, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	store, err := state.Open(s.StateDir)
	if err != nil {
		return err
	}
	store.Log = log
	d := Deps{Store: store, Notifier: sdNotifier{}, Log: log, LFC: NewLFC()}
	if conn, err := bus.Connect(ctx); err != nil {
		log.Warn("no D-Bus: waits re-read the state record every few seconds, and the LFC routes of the API are unavailable", "err", err)
	} else {
		defer conn.Close()
		conn.Log = log
		d.Subscribe = conn.Subscribe
		serveLFC(conn, d.LFC, log)
		d.LFCChanged = func(seq uint64) {
			if err := conn.EmitLFCChanged(seq); err != nil {
				log.Debug("d-bus", "err", err)
			}
		}
	}
	if w, ok := sysd.WatchdogInterval(log); ok {
		s.Watchdog = w
	}
	log.Info("compute-monitor started", "interval_ms", s.Interval.Milliseconds(), "watchdog_ms", s.Watchdog.Milliseconds())
	return Run(ctx, s, d)
}

// serveLFC exports the LFC object and claims the monitor's bus name. Without them the
// API's LFC routes answer that the monitor is unavailable; the activity monitor goes on.
func serveLFC(conn *bus.Conn, l *LFC, log *slog.Logger) {
	if err := conn.ServeLFC(l); err != nil {
		log.Warn("LFC methods not served on D-Bus", "err", err)
		return
	}
	if err := conn.ClaimMonitorName(); err != nil {
		log.Warn("LFC methods not served on D-Bus", "err", err)
	}
}

// sdNotifier tells systemd through internal/sysd.
type sdNotifier struct{}

func (sdNotifier) Ready(status string) error  { return sysd.Ready(status) }
func (sdNotifier) Status(status string) error { return sysd.Status(status) }
func (sdNotifier) Watchdog() error            { return sysd.Watchdog() }
