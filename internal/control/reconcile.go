package control

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/state"
)

// UnitStates are the ActiveState= values ("active", "activating", "inactive", "failed",
// "deactivating", "reloading") of the compute units Reconcile looks at.
type UnitStates struct {
	Init, Postgres, Configure string
}

// postgresUp reports whether the Postgres unit runs or is on its way up or down (its stop
// job, stop hook included, has not ended).
func (s UnitStates) postgresUp() bool {
	switch s.Postgres {
	case "active", "activating", "reloading", "deactivating":
		return true
	}
	return false
}

// ReconcileAction says what Reconcile did.
type ReconcileAction string

// The actions of Reconcile (docs/architecture.md, "Crash consistency", has the table).
const (
	// ReconcileNone: the record needs nothing from the API (not pending, or a unit is
	// already carrying the operation out).
	ReconcileNone ReconcileAction = "none"
	// ReconcileReconfigured: a configuration_pending left with Postgres running: the
	// configure step was restarted, as /configure does.
	ReconcileReconfigured ReconcileAction = "reconfigure"
	// ReconcileStoppedPostgres: a termination_pending_* left with Postgres up: Postgres
	// was stopped and the termination completed, as /terminate does.
	ReconcileStoppedPostgres ReconcileAction = "stop-postgres"
	// ReconcileCancelledStartup: a termination_pending_* left with Postgres down:
	// compute-init was stopped (a waiting or queued start ends) and the termination
	// completed.
	ReconcileCancelledStartup ReconcileAction = "cancel-startup"
	// ReconcileRefreshPending: a refresh_configuration left by a compute-api that ended
	// mid-refresh (the configure step not applying its spec): back to
	// refresh_configuration_pending, so that Postgres's next request tries again.
	ReconcileRefreshPending ReconcileAction = "refresh-pending"
)

// ReconcileLogMsg is the journal message Reconcile logs when it acts (MESSAGE
// "reconciling an interrupted operation", with status and action): the system test's
// fault suite can wait for it.
const ReconcileLogMsg = "reconciling an interrupted operation"

// Reconcile finishes an operation that an earlier compute-api left half done: killed
// between recording configuration_pending or termination_pending_* and asking systemd,
// it would leave every later /configure and /terminate answering 412 for good. It is
// called once when compute-api starts, and looks at the record and, only when it is
// pending, at the units:
//
//	recorded status          units                                   action
//	configuration_pending    Postgres active, configure not starting restart compute-configure (as /configure)
//	configuration_pending    anything else                           none: compute-init or the configure step takes it, or the next start does
//	termination_pending_*    Postgres active/activating/deactivating stop Postgres (fast shutdown, either mode), complete (as /terminate)
//	termination_pending_*    Postgres inactive or failed             stop compute-init, complete; a neon primary without its final LSN fails
//	refresh_configuration    configure not activating                back to refresh_configuration_pending
//	any other                -                                       none
//
// Every status change goes through the store's guarded lifecycle operations on behalf of
// the API, so a unit that moves the record meanwhile wins and Reconcile's step is a no-op.
// The returned error is also recorded (failed) where the API may record it.
func (c *Controller) Reconcile(ctx context.Context) (ReconcileAction, error) {
	defer c.reconciledOnce.Do(func() {
		if ch := c.reconciled.Load(); ch != nil {
			close(*ch)
		}
	})
	rec, err := c.cfg.Store.Load()
	if err != nil {
		// No record: nothing was left pending.
		return ReconcileNone, nil
	}
	if rec.Status != state.ConfigurationPending && rec.Status != state.RefreshConfiguration && !rec.Status.TerminationPending() {
		return ReconcileNone, nil
	}
	log := c.logger(ctx)
	if c.cfg.Units == nil {
		return ReconcileNone, fmt.Errorf("reconcile %s: no systemd units configured", rec.Status)
	}
	units, err := c.cfg.Units.States(ctx)
	if err != nil {
		return ReconcileNone, fmt.Errorf("reconcile %s: unit states: %w", rec.Status, err)
	}
	switch {
	case rec.Status == state.RefreshConfiguration:
		// Pending, not running: the refresh was asked because the pageserver stopped
		// answering, and nothing says the pageservers are right now; Postgres asks
		// again, and the next refresh fetches the spec anew.
		if units.Configure == "activating" {
			return ReconcileNone, nil // the configure step applies a refreshed spec
		}
		log.Warn(ReconcileLogMsg, "status", rec.Status, "action", ReconcileRefreshPending, "configure", units.Configure)
		if _, err := c.cfg.Store.RetryRefresh(state.ActorAPI, "refresh configuration: interrupted (compute-api restarted)"); err != nil {
			return ReconcileRefreshPending, stateError(err)
		}
		return ReconcileRefreshPending, nil
	case rec.Status == state.ConfigurationPending:
		if units.Postgres != "active" || units.Configure == "activating" {
			return ReconcileNone, nil
		}
		log.Warn(ReconcileLogMsg, "status", rec.Status, "action", ReconcileReconfigured,
			"postgres", units.Postgres, "configure", units.Configure)
		if msg := c.reconfigure(ctx); msg != "" {
			return ReconcileReconfigured, &FailedError{Msg: msg}
		}
		return ReconcileReconfigured, nil
	case units.postgresUp():
		immediate := rec.Status == state.TerminationPendingImmediate
		log.Warn(ReconcileLogMsg, "status", rec.Status, "action", ReconcileStoppedPostgres, "postgres", units.Postgres)
		if err := c.unitsCall(func(u Units) error { return u.StopPostgres(ctx, immediate) }); err != nil {
			return ReconcileStoppedPostgres, c.failTermination(log, "stop postgres", err)
		}
		return ReconcileStoppedPostgres, c.finishReconciledTermination(log)
	default:
		log.Warn(ReconcileLogMsg, "status", rec.Status, "action", ReconcileCancelledStartup,
			"postgres", units.Postgres, "init", units.Init)
		if err := c.unitsCall(func(u Units) error { return u.CancelStartup(ctx) }); err != nil {
			return ReconcileCancelledStartup, c.failTermination(log, "cancel startup", err)
		}
		return ReconcileCancelledStartup, c.finishReconciledTermination(log)
	}
}

// finishReconciledTermination completes a termination whose Postgres is down. A neon
// primary completes only with the final LSN, which only the stop hook records: if it
// still has none, its stop hook never ran to the end, and the compute fails with the
// reason rather than stay pending.
func (c *Controller) finishReconciledTermination(log *slog.Logger) error {
	if err := c.completeTermination(log); err != nil {
		return err
	}
	rec, err := c.cfg.Store.Load()
	if err != nil {
		return &StateError{Op: "read state", Err: err}
	}
	switch {
	case rec.Status == state.Failed:
		return &FailedError{Msg: errorText(rec)}
	case !rec.Status.TerminationPending():
		return nil
	}
	msg := "terminate: interrupted: postgres stopped without the final safekeeper sync's LSN"
	if _, failed, err := c.cfg.Store.Fail(state.ActorAPI, msg, state.TerminationPendingFast, state.TerminationPendingImmediate); err != nil {
		return stateError(err)
	} else if failed {
		logx.Milestone(log, logx.MsgFailed, "compute failed", "err", msg)
	}
	return &FailedError{Msg: msg}
}

// HoldUntilReconciled makes Configure, Terminate and Promote wait until Reconcile has run
// (or their ctx ends). compute-api calls it before it serves and runs Reconcile beside
// its servers: /status answers and READY=1 goes out at once, while a request that would
// move the record waits for the interrupted operation to be finished rather than race
// its unit job (or be refused with 412 because the record is still pending).
func (c *Controller) HoldUntilReconciled() {
	ch := make(chan struct{})
	c.reconciled.Store(&ch)
}

// waitReconciled waits for Reconcile when HoldUntilReconciled was called.
func (c *Controller) waitReconciled(ctx context.Context) error {
	ch := c.reconciled.Load()
	if ch == nil {
		return nil
	}
	select {
	case <-*ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
