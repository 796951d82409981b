package control

import (
	"bytes"
	"context"
	"errors"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Configure is POST /configure for a config already decoded and validated (raw is the
// body as sent, parsed its spec): it stores the config, moves the status to
// configuration_pending and blocks, without a timeout, until the compute is running
// (the record) or failed (a FailedError with the reason). On an empty compute, the
// waiting compute-init takes the config; on a running one, the configure unit is re-run
// to apply it (reconfiguration). A failed compute whose Postgres still runs (a failed
// reconfiguration, say) accepts a new config too, which is the way out of failed that
// compute_ctl lacks. A compute pending a refresh (one that keeps failing, say) takes the
// pushed config instead; the refresh, when it runs, finds nothing to do. Another status is
// refused with a state.WrongStatusError.
func (c *Controller) Configure(ctx context.Context, raw []byte, parsed *spec.Parsed) (state.Record, error) {
	if err := c.waitReconciled(ctx); err != nil {
		return state.Record{}, err
	}
	log := c.logger(ctx)
	// A failed compute can be reconfigured only while its Postgres runs.
	if cur, err := c.Load(); err == nil && cur.Status == state.Failed {
		active, aerr := c.postgresActive(ctx)
		if aerr != nil {
			log.Warn("could not tell whether postgres runs", "err", aerr)
		}
		if !active {
			return cur, &state.WrongStatusError{Status: cur.Status}
		}
	}

	// Subscribe before touching the state so that no change after it can be missed.
	wake, cancel := c.subscribe()
	defer cancel()

	from, rec, err := c.submitConfig(raw, parsed, nil, state.Empty, state.Running, state.Failed, state.RefreshConfigurationPending)
	if err != nil {
		return rec, stateError(err)
	}
	logx.Milestone(log, logx.MsgConfigAccepted, "configuration received", "from", from, "status", rec.Status, "storage", parsed.Storage)
	if from != state.Empty {
		if msg := c.reconfigure(context.WithoutCancel(ctx)); msg != "" {
			return rec, &FailedError{Msg: msg}
		}
	}

	rec, err = c.wait(ctx, wake, state.Running, state.Failed)
	if err != nil {
		return rec, err
	}
	if rec.Status == state.Failed {
		return rec, &FailedError{Msg: errorText(rec)}
	}
	return rec, nil
}

func (c *Controller) postgresActive(ctx context.Context) (bool, error) {
	if c.cfg.Units == nil {
		return false, errors.New("no systemd units configured")
	}
	return c.cfg.Units.PostgresActive(ctx)
}

// submitConfig stores raw as the pending config and moves the status to
// configuration_pending (state.Store.AcceptConfig), if the status is one of from and
// check (if set) passes, both under the state lock; it returns the status it left.
func (c *Controller) submitConfig(raw []byte, parsed *spec.Parsed, check func() error, from ...state.Status) (state.Status, state.Record, error) {
	return c.cfg.Store.AcceptConfig(from, func(rec *state.Record) error {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		if c.cfg.WritePendingConfig == nil {
			return &PendingConfigError{errors.New("no pending config writer")}
		}
		// Under the state lock: the config is on disk before anyone can see
		// configuration_pending, and nobody can leave empty meanwhile.
		if err := c.cfg.WritePendingConfig(raw); err != nil {
			return &PendingConfigError{err}
		}
		if parsed.TenantID != "" {
			rec.Tenant = &parsed.TenantID
		}
		if parsed.TimelineID != "" {
			rec.Timeline = &parsed.TimelineID
		}
		return nil
	})
}

// reconfigure runs the configure step again for a pending config on a compute that was
// running (or failed). A unit that cannot be started leaves failed with a clear error
// (a later /configure can try again); the returned text says why, empty on success of
// the start (the outcome of the step itself is the status it records).
func (c *Controller) reconfigure(ctx context.Context) string {
	return c.reconfigureUnless(ctx, nil)
}

// reconfigureUnless is reconfigure for a caller that may be shut down while it waits
// (the TLS watcher): once stopping is done, a failed wait for the unit's job records
// nothing, since the configure step goes on without us and records its own outcome.
func (c *Controller) reconfigureUnless(ctx context.Context, stopping <-chan struct{}) string {
	err := c.unitsCall(func(u Units) error { return u.Reconfigure(ctx) })
	if err == nil {
		return ""
	}
	msg := "reconfigure: " + err.Error()
	select {
	case <-stopping:
		c.logger(ctx).Warn("stopped waiting for the configure step at shutdown; it records its own outcome",
			"err", err)
		return msg
	default:
	}
	cur, failed, _ := c.cfg.Store.Fail(state.ActorAPI, msg, state.ConfigurationPending, state.Configuration)
	if failed {
		logx.Milestone(c.logger(ctx), logx.MsgFailed, "compute failed", "err", msg)
	}
	if cur.Status == state.Failed && cur.Error != nil {
		// The configure step recorded why it failed: that is the better answer.
		msg = *cur.Error
	}
	return msg
}

// errConfigMoved: the applied config changed between the TLS watcher's look and its
// submit.
var errConfigMoved = errors.New("the applied config changed meanwhile")

// unchangedConfig returns a check (for submitConfig) that the applied config is still raw.
func (c *Controller) unchangedConfig(raw []byte) func() error {
	return func() error {
		now, err := c.cfg.ReadAppliedConfig()
		if err != nil {
			return err
		}
		if !bytes.Equal(now, raw) {
			return errConfigMoved
		}
		return nil
	}
}
