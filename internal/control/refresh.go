package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// RefreshInterval is the least time between two refreshes (Neon main's configurator
// waits 5 s after a refresh that found nothing new or could not reach the control plane,
// so that Postgres's repeated requests do not hammer it).
const RefreshInterval = 5 * time.Second

// RefreshConfiguration is POST /refresh_configuration (Neon main, compute-initiated):
// Postgres asks, when its pageserver stops answering, that the compute fetch a fresh
// spec from the control plane, since the tenant may have moved. A running (or failed,
// with Postgres still up) compute moves to refresh_configuration_pending and the refresh
// starts in the background; the call does not wait for it. A compute in init is left
// alone (its start applies the newest spec), and one already pending is asked again;
// any other status is refused with a *state.RefreshRefusedError. Without a control plane
// (no FetchConfig) nothing could be refreshed: the call fails (500) with ErrNoControlPlane
// and the status stays as it was.
//
// The refresh (refresh_configuration): GET the spec from the control plane; a spec with
// the same pageserver connection info changes nothing (running again, or failed again
// with its old error when the refresh was asked from failed); another one is
// stored as the pending config and applied by the configure step, as a reconfiguration
// (postgresql.conf rewritten, Postgres reloaded, the catalog applied), which ends in
// running, or back in refresh_configuration_pending when it fails (the next request
// tries again). A control plane that cannot be reached, or a spec that does not validate,
// leaves the compute pending too; one that answers without a spec (the compute is no
// longer attached) fails it, where compute_ctl exits. Refreshes run one at a time, at
// least RefreshInterval apart.
func (c *Controller) RefreshConfiguration(ctx context.Context) error {
	if c.cfg.FetchConfig == nil {
		return ErrNoControlPlane
	}
	if cur, err := c.Load(); err == nil && cur.Status == state.Failed {
		active, aerr := c.postgresActive(ctx)
		if aerr != nil {
			c.logger(ctx).Warn("could not tell whether postgres runs", "err", aerr)
		}
		if !active {
			return &state.RefreshRefusedError{Status: cur.Status}
		}
		// A refresh that finds the same pageservers goes back to failed, with this error.
		c.refreshMu.Lock()
		c.refresh.failed = errorText(cur)
		c.refreshMu.Unlock()
	}
	rec, err := c.cfg.Store.RequestRefresh()
	if err != nil {
		var refused *state.RefreshRefusedError
		if errors.As(err, &refused) {
			return err
		}
		return stateError(err)
	}
	if rec.Status != state.RefreshConfigurationPending {
		c.logger(ctx).Info("refresh_configuration: the compute is starting; nothing to refresh", "status", rec.Status)
		return nil
	}
	c.startRefresh(c.logger(ctx))
	return nil
}

// ErrNoControlPlane is a refresh asked of a compute without a control plane.
var ErrNoControlPlane = errors.New("refresh configuration: no control plane configured (CONTROL_PLANE_URI): nowhere to fetch a fresh spec from")

// WaitRefreshes waits until no refresh runs in the background (in tests; at shutdown the
// server's task group waits for it, see Deps.Tasks).
func (c *Controller) WaitRefreshes() { c.refreshes.Wait() }

// refresher keeps refreshes one at a time and RefreshInterval apart.
type refresher struct {
	busy bool
	last time.Time
	// failed is the error of the failed compute the pending refresh was asked from
	// (empty when it was running): a refresh that changes nothing goes back to it.
	failed string
}

// takeFailed returns and clears refresher.failed.
func (c *Controller) takeFailed() string {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	msg := c.refresh.failed
	c.refresh.failed = ""
	return msg
}

// startRefresh runs a refresh in the background unless one runs already (which will see
// the pending status it left, or this request's, when it ends). It is not bound to the
// request (Postgres does not wait for it) but is one of the server's tasks (Deps.Tasks,
// as a promotion): shutdown cancels it (a cancelled fetch leaves the compute pending)
// and waits for it. It logs with the request's logger.
func (c *Controller) startRefresh(log *slog.Logger) {
	c.refreshMu.Lock()
	if c.refresh.busy {
		c.refreshMu.Unlock()
		return
	}
	c.refresh.busy = true
	wait := c.refresh.last.Add(RefreshInterval).Sub(c.now())
	c.refreshMu.Unlock()
	c.refreshes.Add(1)
	c.cfg.Tasks.Go(func(tctx context.Context) {
		defer c.refreshes.Done()
		ctx := WithLogger(tctx, log)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		c.refreshOnce(ctx)
		c.refreshMu.Lock()
		c.refresh.busy, c.refresh.last = false, c.now()
		c.refreshMu.Unlock()
	})
}

// refreshOnce is one refresh: refresh_configuration_pending -> refresh_configuration ->
// running, refresh_configuration_pending or failed.
func (c *Controller) refreshOnce(ctx context.Context) {
	log := c.logger(ctx)
	if _, err := c.cfg.Store.BeginRefresh(); err != nil {
		// Terminated meanwhile, say: nothing to refresh.
		log.Info("refresh_configuration: not refreshing", "err", err)
		return
	}
	retry := func(err error) {
		log.Error("refresh_configuration: could not refresh; the next request tries again", "err", err)
		if _, rerr := c.cfg.Store.RetryRefresh(state.ActorAPI, "refresh configuration: "+err.Error()); rerr != nil {
			log.Warn("refresh_configuration: record the failure", "err", rerr)
		}
	}
	if c.cfg.FetchConfig == nil {
		retry(ErrNoControlPlane)
		return
	}
	cc, err := c.cfg.FetchConfig(ctx)
	if err != nil {
		retry(err)
		return
	}
	if cc.Spec == nil {
		msg := "refresh configuration: the control plane has no spec for this compute: it is no longer attached to storage"
		if _, failed, ferr := c.cfg.Store.Fail(state.ActorAPI, msg, state.RefreshConfiguration); ferr != nil || !failed {
			log.Warn("refresh_configuration: record the failure", "err", ferr, "failed", failed)
		}
		log.Error("refresh_configuration: compute failed", "err", msg)
		return
	}
	fresh, err := spec.Encode(cc)
	if err != nil {
		retry(fmt.Errorf("control plane spec: %w", err))
		return
	}
	if cur, err := c.appliedPageserver(); err != nil {
		log.Warn("refresh_configuration: could not read the applied config; applying the fresh one", "err", err)
	} else if cur.Equal(fresh.Spec.Pageserver) {
		log.Info("refresh_configuration: the control plane's spec names the same pageservers; nothing to do until it changes")
		if msg := c.takeFailed(); msg != "" {
			// Asked from failed: nothing was repaired, so failed it stays.
			if _, failed, err := c.cfg.Store.Fail(state.ActorAPI, msg, state.RefreshConfiguration); err != nil || !failed {
				log.Warn("refresh_configuration: record the end", "err", err, "failed", failed)
			}
			return
		}
		if _, err := c.cfg.Store.FinishRefresh(); err != nil {
			log.Warn("refresh_configuration: record the end", "err", err)
		}
		return
	}
	if c.cfg.WritePendingConfig == nil {
		retry(errors.New("no pending config writer"))
		return
	}
	if err := c.cfg.WritePendingConfig(fresh.Raw); err != nil {
		retry(fmt.Errorf("store the fresh config: %w", err))
		return
	}
	c.takeFailed() // the configure step's outcome replaces the old failure
	log.Info("refresh_configuration: the pageservers changed; reconfiguring",
		"shards", len(fresh.Spec.Pageserver.Shards), "protocol", fresh.Spec.Pageserver.Prefer)
	if err := c.unitsCall(func(u Units) error { return u.Reconfigure(ctx) }); err != nil {
		// The configure step records its own outcome when it ran; when it could not be
		// started, the status is still refresh_configuration.
		if rec, lerr := c.Load(); lerr == nil && rec.Status == state.RefreshConfiguration {
			retry(fmt.Errorf("reconfigure: %w", err))
		}
	}
}

// appliedPageserver is the pageserver connection info of the config the compute runs.
func (c *Controller) appliedPageserver() (spec.PageserverConn, error) {
	if c.cfg.ReadAppliedConfig == nil {
		return spec.PageserverConn{}, errors.New("no applied config reader")
	}
	raw, err := c.cfg.ReadAppliedConfig()
	if err != nil {
		return spec.PageserverConn{}, err
	}
	l, err := spec.Load(raw)
	if err != nil {
		return spec.PageserverConn{}, err
	}
	return l.Spec.Pageserver, nil
}
