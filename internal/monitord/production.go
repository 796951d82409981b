package monitord

import (
	"context"
	"log/slog"
	"sync"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/sysd"
)

// Main runs compute-monitor with its production collaborators: the state store in
// s.StateDir, a best-effort D-Bus connection (its StatusChanged signals wake the waits;
// a write of the monitor that changes the status, which it never does, would be announced
// on it), sd_notify, and systemd's watchdog
// interval from the environment (WATCHDOG_USEC).
func Main(ctx context.Context, s Settings, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	store, err := state.Open(s.StateDir)
	if err != nil {
		return err
	}
	store.Log = log
	d := Deps{Store: store, Notifier: sdNotifier{}, Log: log}
	if conn, err := bus.Connect(ctx); err != nil {
		log.Warn("no D-Bus: waits re-read the state record every few seconds", "err", err)
	} else {
		defer conn.Close()
		conn.Log = log
		d.Subscribe = conn.Subscribe
		first := state.Empty
		if r, err := store.Load(); err == nil {
			first = r.Status
		}
		store.OnChange = announceStatusChanges(first, conn.EmitStatusChanged, log)
	}
	if w, ok := sysd.WatchdogInterval(log); ok {
		s.Watchdog = w
	}
	log.Info("compute-monitor started", "interval_ms", s.Interval.Milliseconds(), "watchdog_ms", s.Watchdog.Milliseconds())
	return Run(ctx, s, d)
}

// sdNotifier tells systemd through internal/sysd.
type sdNotifier struct{}

func (sdNotifier) Ready(status string) error  { return sysd.Ready(status) }
func (sdNotifier) Status(status string) error { return sysd.Status(status) }
func (sdNotifier) Watchdog() error            { return sysd.Watchdog() }

// announceStatusChanges is the store's OnChange: it emits StatusChanged only for a write
// that changed the status (from the one last seen, first at the start). The monitor's
// writes (last_active, downtime) never do, and a signal for each would wake every waiter
// of the compute (compute-api's watchers, the lease loop, status --wait) once a second.
func announceStatusChanges(first state.Status, emit func(status string, seq uint64) error, log *slog.Logger) func(state.Record) {
	var mu sync.Mutex
	last := first
	return func(r state.Record) {
		mu.Lock()
		changed := r.Status != last
		last = r.Status
		mu.Unlock()
		if !changed {
			return
		}
		if err := emit(string(r.Status), r.Seq); err != nil {
			log.Warn("announce status", "err", err)
		}
	}
}
