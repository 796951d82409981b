package apiserver

import (
	"context"
	"errors"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/sysd"
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

// lossWatch passes the unit calls through and reports on lost, once, the first error
// that says the connection to systemd is gone (sysd.ErrDisconnected): the Manager does
// not reconnect, so Serve ends and the unit's Restart= brings a new process with new
// connections.
type lossWatch struct {
	u    control.Units
	lost chan<- error
}

func (w lossWatch) check(err error) error {
	if errors.Is(err, sysd.ErrDisconnected) {
		select {
		case w.lost <- err:
		default:
		}
	}
	return err
}

func (w lossWatch) StopPostgres(ctx context.Context, immediate bool) error {
	return w.check(w.u.StopPostgres(ctx, immediate))
}

func (w lossWatch) CancelStartup(ctx context.Context) error {
	return w.check(w.u.CancelStartup(ctx))
}

func (w lossWatch) Reconfigure(ctx context.Context) error { return w.check(w.u.Reconfigure(ctx)) }

func (w lossWatch) PostgresActive(ctx context.Context) (bool, error) {
	ok, err := w.u.PostgresActive(ctx)
	return ok, w.check(err)
}

func (w lossWatch) States(ctx context.Context) (control.UnitStates, error) {
	s, err := w.u.States(ctx)
	return s, w.check(err)
}

// StopCompute queues a stop of compute.target (which stops compute-api too) and returns.
func (u units) StopCompute(ctx context.Context) error {
	return u.m.QueueStop(ctx, paths.UnitTarget)
}

// PowerOff asks systemd to power the machine off (poweroff.target).
func (u units) PowerOff(ctx context.Context) error {
	return u.m.PowerOff(ctx)
}
