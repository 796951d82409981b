// Package sysd is the project's only bridge to systemd: sd_notify readiness, status and
// watchdog messages, and the systemd manager API over D-Bus (start, stop, restart and kill
// units, read their state and control group, set MemoryHigh= at runtime), with job results
// checked. It is the only package that imports go-systemd; consumers declare the narrow
// interfaces they need and get a *Manager.
package sysd

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state lines (for example "READY=1", "STATUS=running") to the service
// manager in one datagram. Without NOTIFY_SOCKET (not started by systemd, or not a
// Type=notify unit) it does nothing and returns nil.
func Notify(state ...string) error {
	if len(state) == 0 {
		return nil
	}
	if _, err := daemon.SdNotify(false, strings.Join(state, "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd that the unit is ready (READY=1), with an optional STATUS= line.
func Ready(status string) error {
	lines := []string{daemon.SdNotifyReady}
	if status != "" {
		lines = append(lines, statusLine(status))
	}
	return Notify(lines...)
}

// Status sets the free-form status shown by `systemctl status`.
func Status(status string) error {
	return Notify(statusLine(status))
}

// Stopping tells systemd that the unit is shutting down (STOPPING=1).
func Stopping() error {
	return Notify(daemon.SdNotifyStopping)
}

// Watchdog pings the service watchdog (WATCHDOG=1). Call it only after a successful
// health check, at most every WatchdogInterval(log)/2.
func Watchdog() error {
	return Notify(daemon.SdNotifyWatchdog)
}

// WatchdogInterval reports the unit's watchdog timeout (WATCHDOG_USEC) and whether the
// watchdog is enabled for this process (WATCHDOG_PID, when set, must be our PID). A
// malformed environment is logged to log (nil: slog.Default()) and treated as disabled.
func WatchdogInterval(log *slog.Logger) (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		if log == nil {
			log = slog.Default()
		}
		log.Warn("ignoring invalid watchdog environment", "err", err)
		return 0, false
	}
	return d, d > 0
}

// statusLine builds a STATUS= line; a newline would end the line early, so it is
// replaced by a space.
func statusLine(status string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(status)
}
