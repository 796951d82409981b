package apiserver

import (
	"context"
	"syscall"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
)

// unitManager is what the unit adapter needs of systemd (*sysd.Manager).
type unitManager interface {
	KillUnit(ctx context.Context, name string, who string, sig syscall.Signal) error
	StopUnit(ctx context.Context, name string) error
	RestartUnit(ctx context.Context, name string) error
	ActiveState(ctx context.Context, name string) (string, error)
}

// units implements control.Units: it stops and starts the compute units through systemd.
type units struct{ m unitManager }

// StopPostgres stops compute-postgres.service; immediate first sends SIGQUIT, Postgres's
// immediate shutdown, and the stop job then waits for the end.
func (u units) StopPostgres(ctx context.Context, immediate bool) error {
	if immediate {
		if err := u.m.KillUnit(ctx, paths.UnitPostgres, "main", syscall.SIGQUIT); err != nil {
			return err
		}
	}
	return u.m.StopUnit(ctx, paths.UnitPostgres)
}

// CancelStartup stops compute-init.service.
func (u units) CancelStartup(ctx context.Context) error {
	return u.m.StopUnit(ctx, paths.UnitInit)
}

// Reconfigure restarts compute-configure.service.
func (u units) Reconfigure(ctx context.Context) error {
	return u.m.RestartUnit(ctx, paths.UnitConfigure)
}

// PostgresActive reports whether compute-postgres.service is active.
func (u units) PostgresActive(ctx context.Context) (bool, error) {
	st, err := u.m.ActiveState(ctx, paths.UnitPostgres)
	return st == "active", err
}

// States reports the ActiveState= of compute-init, compute-postgres and
// compute-configure.
func (u units) States(ctx context.Context) (control.UnitStates, error) {
	var s control.UnitStates
	for _, x := range []struct {
		name string
		to   *string
	}{{paths.UnitInit, &s.Init}, {paths.UnitPostgres, &s.Postgres}, {paths.UnitConfigure, &s.Configure}} {
		st, err := u.m.ActiveState(ctx, x.name)
		if err != nil {
			return s, err
		}
		*x.to = st
	}
	return s, nil
}
