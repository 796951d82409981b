package monitord

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/memtrim"
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
	// The LFC side runs only in the process that owns the monitor's bus name: a second
	// instance (run by hand) or one without D-Bus must not prewarm, offload or cancel the
	// queries of the one that does.
	d := Deps{Store: store, Notifier: sdNotifier{}, Log: log, LFC: NewLFC(), NoLFC: true}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var busLost atomic.Bool
	if conn, err := bus.Connect(ctx); err != nil {
		log.Warn("no D-Bus: waits re-read the state record every few seconds; no LFC prewarm or offload", "err", err)
	} else {
		defer conn.Close()
		conn.Log = log
		// A lost bus connection does not come back (dbus-daemon restarted): end, and
		// let Restart= bring a process that connects again and owns the name again.
		go func() {
			select {
			case <-conn.Done():
				if ctx.Err() == nil {
					busLost.Store(true)
					stopRun()
				}
			case <-runCtx.Done():
			}
		}()
		d.Subscribe = conn.Subscribe
		d.NoLFC = !serveLFC(ctx, conn, d.LFC, log)
		d.LFCChanged = func(seq uint64) {
			if err := conn.EmitLFCChanged(seq); err != nil {
				log.Debug("d-bus", "err", err)
			}
		}
	}
	if w, ok := sysd.WatchdogInterval(log); ok {
		s.Watchdog = w
	}
	d.Trim = func() { memtrim.TrimLogged(log) }
	log.Info("compute-monitor started", "interval_ms", s.Interval.Milliseconds(), "watchdog_ms", s.Watchdog.Milliseconds())
	err = Run(runCtx, s, d)
	if busLost.Load() {
		err = errors.New("the connection to the system bus is lost (dbus-daemon restarted?): exiting so that systemd restarts compute-monitor, which connects again")
		log.Error("bus connection lost", "err", err)
	}
	return err
}

// claimTries and claimEvery bound the wait for the bus name: a monitor restarted by the
// watchdog may find the killed process's connection still holding it for a moment.
const (
	claimTries = 20
	claimEvery = 250 * time.Millisecond
)

// serveLFC exports the LFC object and claims the monitor's bus name; it reports whether
// this process owns it. Without it the API's LFC routes answer that the monitor is
// unavailable and this process runs no LFC operation; the activity monitor goes on.
func serveLFC(ctx context.Context, conn *bus.Conn, l *LFC, log *slog.Logger) bool {
	if err := conn.ServeLFC(l); err != nil {
		log.Warn("LFC methods not served on D-Bus: no LFC prewarm or offload", "err", err)
		return false
	}
	var err error
	for i := 0; i < claimTries; i++ {
		if err = conn.ClaimMonitorName(); err == nil {
			return true
		}
		if !errors.Is(err, bus.ErrMonitorNameTaken) {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(claimEvery):
		}
	}
	log.Warn("LFC methods not served on D-Bus: no LFC prewarm or offload", "err", err)
	return false
}

// sdNotifier tells systemd through internal/sysd.
type sdNotifier struct{}

func (sdNotifier) Ready(status string) error  { return sysd.Ready(status) }
func (sdNotifier) Status(status string) error { return sysd.Status(status) }
func (sdNotifier) Watchdog() error            { return sysd.Watchdog() }
