package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/state"
)

// Termination is the outcome of Terminate.
type Termination struct {
	// LSN is the final LSN (nil in standalone mode and when nothing ran).
	LSN *string
	// Already: the compute was terminated before this call (compute_ctl answers 201).
	Already bool
}

// Terminate is POST /terminate. An already terminated compute gives its final LSN
// (Already). An empty or running compute moves to termination_pending_*; pgbouncer and
// local_proxy are stopped (Deps.Companions; never failing the call); then a waiting
// compute-init is stopped (empty; compute_ctl would hang here) or Postgres is stopped
// through systemd (running), and the call blocks until the status is terminated (the
// LSN) or failed (a FailedError with the reason). Another status is refused with a
// state.WrongStatusError.
func (c *Controller) Terminate(ctx context.Context, immediate bool) (Termination, error) {
	if err := c.waitReconciled(ctx); err != nil {
		return Termination{}, err
	}
	c.terminating.begin()
	defer c.terminating.end()
	log := c.logger(ctx)
	wake, cancel := c.subscribe()
	defer cancel()

	from, rec, err := c.cfg.Store.BeginTermination(immediate)
	if errors.Is(err, state.ErrAlreadyTerminated) {
		return Termination{LSN: rec.TerminateLSN, Already: true}, nil
	}
	if err != nil {
		return Termination{}, stateError(err)
	}
	log.Info("terminating", "from", from, "status", rec.Status)

	// The work below must finish even if the caller goes away; only the final wait
	// follows ctx.
	wctx := context.WithoutCancel(ctx)
	c.stopCompanions(wctx, log)
	switch from {
	case state.Empty:
		if err := c.unitsCall(func(u Units) error { return u.CancelStartup(wctx) }); err != nil {
			return Termination{}, c.failTermination(log, "cancel startup", err)
		}
		// Nothing ran, so there is no final LSN.
		if err := c.completeTermination(log); err != nil {
			return Termination{}, err
		}
	case state.Running, state.RefreshConfigurationPending:
		// A pending refresh has Postgres running (or stopped, from failed: stopping a
		// stopped unit is a no-op), like running.
		if err := c.unitsCall(func(u Units) error { return u.StopPostgres(wctx, immediate) }); err != nil {
			return Termination{}, c.failTermination(log, "stop postgres", err)
		}
		// For a neon primary the Postgres unit's stop hook syncs the safekeepers and sets
		// terminated with the LSN (state.Record.NeedsFinalSync). Elsewhere there is no
		// LSN to wait for; finish here if no hook did.
		if err := c.completeTermination(log); err != nil {
			return Termination{}, err
		}
	}

	rec, err = c.wait(ctx, wake, state.Terminated, state.Failed)
	if err != nil {
		return Termination{}, err
	}
	if rec.Status == state.Failed {
		return Termination{}, &FailedError{Msg: errorText(rec)}
	}
	log.Info("terminated")
	return Termination{LSN: rec.TerminateLSN}, nil
}

// stopCompanions ends pgbouncer and local_proxy, as compute_ctl does before it stops
// Postgres; a failure is logged only (compute_ctl ignores it too).
func (c *Controller) stopCompanions(ctx context.Context, log *slog.Logger) {
	if c.cfg.Companions == nil {
		return
	}
	if err := c.cfg.Companions.StopCompanions(ctx); err != nil {
		log.Warn("could not stop pgbouncer or local_proxy; terminating all the same", "err", err)
	}
}

// completeTermination moves termination_pending_* to terminated without an LSN when the
// API may (state.Store.CompleteTermination), logging the milestone if it did.
func (c *Controller) completeTermination(log *slog.Logger) error {
	_, done, err := c.cfg.Store.CompleteTermination(state.ActorAPI, nil)
	if err != nil {
		return stateError(err)
	}
	if done {
		logx.Milestone(log, logx.MsgTerminated, "compute terminated")
	}
	return nil
}

// failTermination records a failed termination step and returns it as a FailedError.
func (c *Controller) failTermination(log *slog.Logger, what string, err error) error {
	msg := fmt.Sprintf("terminate: %s: %v", what, err)
	log.Error("termination failed", "step", what, "err", err)
	if _, failed, uerr := c.cfg.Store.Fail(state.ActorAPI, msg, state.TerminationPendingFast, state.TerminationPendingImmediate); uerr != nil {
		log.Error("record failed termination", "err", uerr)
	} else if failed {
		logx.Milestone(log, logx.MsgFailed, "compute failed", "err", msg)
	}
	return &FailedError{Msg: msg}
}
