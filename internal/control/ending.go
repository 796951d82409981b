package control

import (
	"context"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

// EndAction is what compute-api does once a lifecycle has ended (COMPUTE_ON_TERMINATED):
// compute_ctl exits then, which ends its VM; here the compute's units are stopped, the
// machine is powered off, or nothing happens.
type EndAction string

// The end actions.
const (
	// EndStop stops compute.target, and with it every unit of the compute (compute-api
	// too): the default.
	EndStop EndAction = "stop"
	// EndPowerOff powers the machine off through systemd (for VM images: the VM ends, as
	// with compute_ctl).
	EndPowerOff EndAction = "poweroff"
	// EndNone leaves everything as it is (the API keeps serving the final status).
	EndNone EndAction = "none"
)

// ParseEndAction reads a COMPUTE_ON_TERMINATED value.
func ParseEndAction(s string) (EndAction, error) {
	switch a := EndAction(s); a {
	case EndStop, EndPowerOff, EndNone:
		return a, nil
	}
	return "", fmt.Errorf("unknown post-termination action %q (stop, poweroff or none)", s)
}

// EndLinger is how long compute_ctl lingers after a fast termination or a failed start
// before it exits, so that the control plane can read the final status; after an
// immediate termination it exits at once.
const EndLinger = 30 * time.Second

// Ender carries out the end actions (compute-api's adapter over systemd).
type Ender interface {
	// StopCompute queues a stop of compute.target and returns without waiting: the stop
	// ends the caller too.
	StopCompute(ctx context.Context) error
	// PowerOff asks systemd to power the machine off.
	PowerOff(ctx context.Context) error
}

// endOf tells whether rec is a lifecycle that has ended as compute_ctl would exit on,
// and how long to linger first: terminated (EndLinger after a fast termination, none
// after an immediate one), a termination that failed (the mode's linger: compute_ctl
// exits when its final sync fails), or a start that failed (EndLinger). A failure of a
// compute that was running (Postgres died, a reconfiguration failed) is not an end: the
// compute stays failed for inspection and a new /configure, where compute_ctl exits
// (Postgres died) or stays up (a failed reconfiguration).
func endOf(rec state.Record) (time.Duration, bool) {
	switch rec.Status {
	case state.Terminated:
		return modeLinger(rec.EndedFrom), true
	case state.Failed:
		if rec.EndedFrom.TerminationPending() {
			return modeLinger(rec.EndedFrom), true
		}
		if !rec.HasRun {
			return EndLinger, true
		}
	}
	return 0, false
}

func modeLinger(from state.Status) time.Duration {
	if from == state.TerminationPendingImmediate {
		return 0
	}
	return EndLinger
}

// WatchEnd carries out action after every lifecycle that ends while it watches (endOf),
// after the linger, unless a new lifecycle has begun meanwhile. A record that had ended
// before the watch began is left alone: its action was due to an earlier compute-api
// (which may have been stopped by it), and acting again could stop a compute that is
// starting. after is the clock (nil: time.After). It returns when ctx ends.
func (c *Controller) WatchEnd(ctx context.Context, action EndAction, ender Ender, after func(time.Duration) <-chan time.Time) {
	if action == EndNone || ender == nil {
		return
	}
	if after == nil {
		after = time.After
	}
	wake, cancel := c.subscribe()
	defer cancel()
	// The ended lifecycle acted on (or found at the start), by its start time.
	var done time.Time
	if rec, err := c.Load(); err == nil {
		if _, ended := endOf(rec); ended {
			done = rec.StartTime
			c.log.Info("compute had ended before compute-api started: no post-termination action",
				"status", rec.Status, "action", action)
		}
	}
	// A safety net against a lost wake-up, as the other waits.
	recheck := time.NewTicker(c.cfg.Recheck)
	defer recheck.Stop()
	for {
		rec, err := c.Load()
		if err == nil {
			if linger, ended := endOf(rec); ended && !rec.StartTime.Equal(done) {
				done = rec.StartTime
				if !c.endAfter(ctx, rec, linger, action, ender, after) {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-recheck.C:
		}
	}
}

// endAfter lingers, then carries out the action if rec's lifecycle is still the ended
// one. It reports false when ctx ended.
func (c *Controller) endAfter(ctx context.Context, rec state.Record, linger time.Duration, action EndAction, ender Ender, after func(time.Duration) <-chan time.Time) bool {
	log := c.log.With("action", action, "status", rec.Status, "ended_from", rec.EndedFrom)
	log.Info("compute ended: post-termination action after the linger", "linger_ms", linger.Milliseconds())
	if linger > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-after(linger):
		}
	}
	now, err := c.Load()
	if err != nil {
		log.Error("post-termination action: read state", "err", err)
		return true
	}
	if _, ended := endOf(now); !ended || !now.StartTime.Equal(rec.StartTime) {
		log.Info("a new lifecycle began during the linger: no post-termination action", "now", now.Status)
		return true
	}
	switch action {
	case EndStop:
		err = ender.StopCompute(ctx)
	case EndPowerOff:
		err = ender.PowerOff(ctx)
	}
	if err != nil {
		log.Error("post-termination action failed", "err", err)
		return true
	}
	log.Info("post-termination action taken")
	return true
}
