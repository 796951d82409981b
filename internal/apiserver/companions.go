package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/computetools/compute-tools/internal/localproxy"
	"github.com/computetools/compute-tools/internal/paths"
)

// companionUnits is what stopping the companions needs of systemd (*sysd.Manager).
type companionUnits interface {
	ActiveState(ctx context.Context, name string) (string, error)
	StopUnit(ctx context.Context, name string) error
}

// companions implements control.Companions: at /terminate, pgbouncer and local_proxy
// end before Postgres, as compute_ctl's forward_termination_signal ends them. Where one
// runs as an active systemd unit (pgbouncer.service, local_proxy.service) the unit is
// stopped through systemd (compute-api's polkit rule allows exactly that); otherwise
// pgbouncer gets SIGKILL (as compute_ctl) at the pid in its pid file, checked to be a
// pgbouncer process first (the file sits in /tmp), and local_proxy SIGTERM at the pid in
// its pid file while a process holds the file's lock.
type companions struct {
	units            companionUnits
	pgbouncerPidFile string
	localProxyPid    string
	log              *slog.Logger
	// kill is syscall.Kill (tests replace it).
	kill func(pid int, sig syscall.Signal) error
	// comm reads a process's command name (/proc/<pid>/comm).
	comm func(pid int) (string, error)
}

func newCompanions(u companionUnits, pgbouncerPidFile, localProxyPidFile string, log *slog.Logger) *companions {
	return &companions{units: u, pgbouncerPidFile: pgbouncerPidFile, localProxyPid: localProxyPidFile, log: log,
		kill: syscall.Kill, comm: func(pid int) (string, error) {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			return strings.TrimSpace(string(b)), err
		}}
}

// StopCompanions stops both; the errors are joined.
func (c *companions) StopCompanions(ctx context.Context) error {
	return errors.Join(c.stopPgbouncer(ctx), c.stopLocalProxy(ctx))
}

func (c *companions) stopPgbouncer(ctx context.Context) error {
	st, err := c.units.ActiveState(ctx, paths.UnitPgbouncer)
	if err != nil {
		// Without systemd's answer the pid file is tried all the same.
		return errors.Join(fmt.Errorf("pgbouncer: %w", err), c.killPgbouncer())
	}
	if st == "active" || st == "activating" || st == "reloading" {
		if err := c.units.StopUnit(ctx, paths.UnitPgbouncer); err != nil {
			return fmt.Errorf("pgbouncer: %w", err)
		}
		c.log.Info("pgbouncer stopped", "unit", paths.UnitPgbouncer)
		return nil
	}
	return c.killPgbouncer()
}

// killPgbouncer sends SIGKILL to the pgbouncer in the pid file, if it runs.
func (c *companions) killPgbouncer() error {
	if c.pgbouncerPidFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.pgbouncerPidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // not running
	}
	if err != nil {
		return fmt.Errorf("pgbouncer pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("pgbouncer pid file %s: %q is not a pid", c.pgbouncerPidFile, strings.TrimSpace(string(b)))
	}
	if name, err := c.comm(pid); err != nil || name != "pgbouncer" {
		c.log.Info("pgbouncer not stopped: the pid in its pid file is not a running pgbouncer", "pid", pid, "pid_file", c.pgbouncerPidFile)
		return nil
	}
	if err := c.kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgbouncer: kill pid %d: %w", pid, err)
	}
	c.log.Info("pgbouncer killed", "pid", pid)
	return nil
}

func (c *companions) stopLocalProxy(ctx context.Context) error {
	return localproxy.Stop(ctx, localproxy.Options{PidFile: c.localProxyPid, Unit: paths.UnitLocalProxy, Units: stopOnly{c.units}, Log: c.log})
}

// stopOnly adapts companionUnits to localproxy.Units; compute-api never reloads.
type stopOnly struct{ companionUnits }

func (stopOnly) ReloadUnit(context.Context, string) error {
	return errors.New("compute-api does not reload local_proxy")
}
