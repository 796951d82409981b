package apiserver

import (
	"context"

	"github.com/computetools/compute-tools/internal/paths"
)

// unitManager is what the unit adapter needs of systemd (*sysd.Manager).
type unitManager interface {
	StopUnit(ctx context.Context, name string) error
	QueueStop(ctx context.Context, name string) error
	PowerOff(ctx context.Context) error
	RestartUnit(ctx context.Context, name string) error
	ActiveState(ctx context.Context, name string) (string, error)
}

// units implements control.Units and control.Ender: it stops and starts the compute units
// through systemd.
type units struct{ m unitManager }

// StopPostgres stops compute-postgres.service, whose KillSignal=SIGINT is Postgres's fast
// shutdown (it writes the shutdown checkpoint), and waits for the end. The mode does not
// change the shutdown, as in compute_ctl (forward_termination_signal sends SIGINT for both
// modes): it decides only how long the compute lingers before the post-termination action
// (internal/control's OnTerminated).
func (u units) StopPostgres(ctx context.Context, _ bool) error {
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

// StopCompute queues a stop of compute.target (which stops compute-api too) and returns.
func (u units) StopCompute(ctx context.Context) error {
	return u.m.QueueStop(ctx, paths.UnitTarget)
}

// PowerOff asks systemd to power the machine off (poweroff.target).
func (u units) PowerOff(ctx context.Context) error {
	return u.m.PowerOff(ctx)
}
