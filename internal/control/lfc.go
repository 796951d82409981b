package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// LFC is compute-monitor's LFC methods, reached over D-Bus (*bus.Conn implements it). A
// refusal is a *lfcstate.RefusedError; no monitor is lfcstate.ErrUnavailable, no answer
// in time lfcstate.ErrNoAnswer.
type LFC interface {
	LFCPrewarm(ctx context.Context, fromEndpoint string) error
	LFCOffload(ctx context.Context) error
	LFCCancelPrewarm(ctx context.Context) (bool, error)
}

// lfcCallTimeout bounds a call to the monitor, which answers at once (it only writes the
// new state into the record before answering).
const lfcCallTimeout = 10 * time.Second

// LFCStates returns the LFC prewarm and offload states as compute-monitor published them
// (GET /lfc/prewarm and /lfc/offload): the initial ones until it published any.
func (c *Controller) LFCStates() (lfcstate.States, error) {
	rec, err := c.Load()
	if err != nil {
		return lfcstate.States{}, err
	}
	if rec.LFC == nil {
		return lfcstate.States{
			Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmNotPrewarmed},
			Offload: lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded},
		}, nil
	}
	return *rec.LFC, nil
}

func (c *Controller) lfc() (LFC, error) {
	if c.cfg.LFC == nil {
		return nil, fmt.Errorf("%w: compute-api has no D-Bus connection", lfcstate.ErrUnavailable)
	}
	return c.cfg.LFC, nil
}

// lfcRetryWindow: compute-monitor takes a running lifecycle a moment after compute-api can
// see it running (its timer starts it a second after compute.target; a monitor that waits
// takes the compute at the StatusChanged signal). A request that finds no monitor, or one
// that answers "not running", while the record says the compute runs, is retried for this
// long before the answer is passed on.
const lfcRetryWindow = 5 * time.Second

// lfcRetryEvery is the pause between two tries.
const lfcRetryEvery = 50 * time.Millisecond

// lfcCall runs op against the monitor. The call is not bound to the caller's context (an
// HTTP client that goes away must not cut a request the monitor may have taken), only to
// lfcCallTimeout.
func (c *Controller) lfcCall(ctx context.Context, op func(ctx context.Context, l LFC) error) error {
	l, err := c.lfc()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lfcCallTimeout)
	defer cancel()
	retry, stop := context.WithTimeout(ctx, lfcRetryWindow)
	defer stop()
	for {
		err := op(ctx, l)
		if err == nil || !c.lfcRetryable(err) {
			return err
		}
		select {
		case <-retry.Done():
			return err
		case <-time.After(lfcRetryEvery):
		}
	}
}

// lfcRetryable: the monitor is missing or has not taken the lifecycle yet, while the
// compute runs.
func (c *Controller) lfcRetryable(err error) bool {
	var r *lfcstate.RefusedError
	notRunning := errors.As(err, &r) && r.Refusal == lfcstate.RefusedNotRunning
	if !notRunning && !errors.Is(err, lfcstate.ErrUnavailable) {
		return false
	}
	rec, lerr := c.Load()
	if lerr != nil {
		return false
	}
	return rec.Status.Serving() // Postgres serves; the monitor serves the LFC in these
}

// LFCPrewarm asks compute-monitor to prewarm the LFC from fromEndpoint's state ("" = this
// compute's) (POST /lfc/prewarm). It returns once the prewarm is taken (and in the
// record) or refused.
func (c *Controller) LFCPrewarm(ctx context.Context, fromEndpoint string) error {
	if err := c.lfcCall(ctx, func(ctx context.Context, l LFC) error { return l.LFCPrewarm(ctx, fromEndpoint) }); err != nil {
		return err
	}
	c.log.Info("LFC prewarm requested", "from_endpoint", fromEndpoint)
	return nil
}

// LFCOffload asks compute-monitor to offload the LFC state (POST /lfc/offload).
func (c *Controller) LFCOffload(ctx context.Context) error {
	if err := c.lfcCall(ctx, func(ctx context.Context, l LFC) error { return l.LFCOffload(ctx) }); err != nil {
		return err
	}
	c.log.Info("LFC offload requested")
	return nil
}

// LFCCancelPrewarm asks compute-monitor to cancel a running prewarm (DELETE
// /lfc/prewarm); cancelled is false when none ran.
func (c *Controller) LFCCancelPrewarm(ctx context.Context) (cancelled bool, err error) {
	err = c.lfcCall(ctx, func(ctx context.Context, l LFC) error {
		var e error
		cancelled, e = l.LFCCancelPrewarm(ctx)
		return e
	})
	if err != nil {
		return false, err
	}
	c.log.Info("LFC prewarm cancel requested", "cancelled", cancelled)
	return cancelled, nil
}
