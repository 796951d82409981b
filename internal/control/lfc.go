package control

import (
	"context"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// LFC is compute-monitor's LFC methods, reached over D-Bus (*bus.Conn implements it). A
// refusal is a *bus.LFCError; no monitor answering is bus.ErrMonitorUnavailable.
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
		return nil, fmt.Errorf("%w: compute-api has no D-Bus connection", bus.ErrMonitorUnavailable)
	}
	return c.cfg.LFC, nil
}

// LFCPrewarm asks compute-monitor to prewarm the LFC from fromEndpoint's state ("" = this
// compute's) (POST /lfc/prewarm). It returns once the prewarm is taken (and in the
// record) or refused.
func (c *Controller) LFCPrewarm(ctx context.Context, fromEndpoint string) error {
	l, err := c.lfc()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, lfcCallTimeout)
	defer cancel()
	if err := l.LFCPrewarm(ctx, fromEndpoint); err != nil {
		return err
	}
	c.log.Info("LFC prewarm requested", "from_endpoint", fromEndpoint)
	return nil
}

// LFCOffload asks compute-monitor to offload the LFC state (POST /lfc/offload).
func (c *Controller) LFCOffload(ctx context.Context) error {
	l, err := c.lfc()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, lfcCallTimeout)
	defer cancel()
	if err := l.LFCOffload(ctx); err != nil {
		return err
	}
	c.log.Info("LFC offload requested")
	return nil
}

// LFCCancelPrewarm asks compute-monitor to cancel a running prewarm (DELETE
// /lfc/prewarm); cancelled is false when none ran.
func (c *Controller) LFCCancelPrewarm(ctx context.Context) (cancelled bool, err error) {
	l, err := c.lfc()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, lfcCallTimeout)
	defer cancel()
	ok, err := l.LFCCancelPrewarm(ctx)
	if err != nil {
		return false, err
	}
	c.log.Info("LFC prewarm cancel requested", "cancelled", ok)
	return ok, nil
}
