// Package localproxy hands the spec's local_proxy_config to Neon's local_proxy (the
// authenticating proxy beside Postgres), as compute_ctl's local_proxy.rs does: the config
// is written as pretty JSON to local_proxy's config file (/etc/local_proxy/config.json) and
// the running proxy is told to re-read it. When local_proxy runs as a systemd unit (the
// unit is active), that is a `systemctl reload` of the unit through systemd (its
// ExecReload= says how: SIGHUP for local_proxy); otherwise SIGHUP goes to the pid in its
// pid file (/etc/local_proxy/pid) when the file is locked (local_proxy holds an flock on
// it while it runs), as the reference does. A missing pid file or one that no process
// holds means local_proxy is not running: it reads the file when it starts, and that is
// no error. Stop ends local_proxy at termination the same two ways (SIGTERM).
package localproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/computetools/compute-tools/internal/spec"
)

// Units is what the package needs of systemd (*sysd.Manager); nil: no systemd.
type Units interface {
	ActiveState(ctx context.Context, name string) (string, error)
	ReloadUnit(ctx context.Context, name string) error
	StopUnit(ctx context.Context, name string) error
}

// Options says where local_proxy is.
type Options struct {
	ConfigPath string
	PidFile    string
	// Unit is local_proxy's systemd unit (empty: never a unit).
	Unit  string
	Units Units
	// Log receives the progress (nil: slog.Default()).
	Log *slog.Logger
}

func (o Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}

// Configure writes c to the config file and tells a running local_proxy to reload it.
func Configure(ctx context.Context, o Options, c *spec.LocalProxySpec) error {
	if err := WriteConfig(o.ConfigPath, c); err != nil {
		return err
	}
	return Reload(ctx, o)
}

// WriteConfig writes c as indented JSON to path (created 0644 when missing; rewritten in
// place, as the reference does, so that its directory need not be writable).
func WriteConfig(path string, c *spec.LocalProxySpec) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("local_proxy config: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("local_proxy config: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("local_proxy config: write %s: %w", path, werr)
	}
	return nil
}

// Reload tells a running local_proxy to re-read its config (see the package doc).
func Reload(ctx context.Context, o Options) error {
	if active, err := unitActive(ctx, o); err != nil {
		o.log().Warn("local_proxy: cannot tell whether its unit runs; using its pid file", "err", err)
	} else if active {
		if err := o.Units.ReloadUnit(ctx, o.Unit); err != nil {
			return fmt.Errorf("local_proxy: %w", err)
		}
		o.log().Info("local_proxy reloaded", "unit", o.Unit)
		return nil
	}
	return signal(o, syscall.SIGHUP, "reloaded")
}

// Stop ends a running local_proxy: its unit is stopped when it runs as one, else the pid
// in its pid file gets SIGTERM. Not running is no error.
func Stop(ctx context.Context, o Options) error {
	if active, err := unitActive(ctx, o); err != nil {
		o.log().Warn("local_proxy: cannot tell whether its unit runs; using its pid file", "err", err)
	} else if active {
		if err := o.Units.StopUnit(ctx, o.Unit); err != nil {
			return fmt.Errorf("local_proxy: %w", err)
		}
		o.log().Info("local_proxy stopped", "unit", o.Unit)
		return nil
	}
	return signal(o, syscall.SIGTERM, "stopped")
}

// unitActive reports whether local_proxy runs as an active (or reloading) unit.
func unitActive(ctx context.Context, o Options) (bool, error) {
	if o.Unit == "" || o.Units == nil {
		return false, nil
	}
	st, err := o.Units.ActiveState(ctx, o.Unit)
	if err != nil {
		return false, fmt.Errorf("local_proxy: unit %s: %w", o.Unit, err)
	}
	return st == "active" || st == "reloading" || st == "activating", nil
}

// ErrNotRunning is returned by PID when no process holds the pid file.
var ErrNotRunning = errors.New("local_proxy is not running")

// PID returns the pid in the pid file when a process holds the file's lock (local_proxy
// while it runs); ErrNotRunning (wrapped) when the file is missing or nobody holds it.
func PID(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%w: no pid file %s", ErrNotRunning, path)
	}
	if err != nil {
		return 0, fmt.Errorf("local_proxy pid file: %w", err)
	}
	defer f.Close()
	// A lock we can take is a lock nobody holds: a stale file.
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return 0, fmt.Errorf("%w: stale pid file %s (not locked)", ErrNotRunning, path)
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return 0, fmt.Errorf("local_proxy pid file: lock %s: %w", path, err)
	}
	b := make([]byte, 64)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("local_proxy pid file: read %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("local_proxy pid file %s: %q is not a pid", path, strings.TrimSpace(string(b[:n])))
	}
	return pid, nil
}

// signal sends sig to the pid in the pid file, if local_proxy runs.
func signal(o Options, sig syscall.Signal, did string) error {
	pid, err := PID(o.PidFile)
	if errors.Is(err, ErrNotRunning) {
		o.log().Info("local_proxy not signalled", "reason", err.Error())
		return nil
	}
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			o.log().Info("local_proxy not signalled", "reason", "process gone", "pid", pid)
			return nil
		}
		return fmt.Errorf("local_proxy: signal pid %d: %w", pid, err)
	}
	o.log().Info("local_proxy "+did, "pid", pid, "signal", sig.String())
	return nil
}
