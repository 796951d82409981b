package control

import (
	"context"
	"fmt"
	"sync"
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

// WatchEnd returns the watch that carries out action after every lifecycle that ends
// while it watches (endOf), after the linger, unless a new lifecycle has begun meanwhile;
// run it with the returned function, which returns when ctx ends. The record it starts
// from is taken here, before WatchEnd returns: a record that had ended before is left
// alone, as its action was due to an earlier compute-api (which may have been stopped by
// it), and acting again could stop a compute that is starting. after is the clock (nil:
// time.After). With EndNone (or no ender) the returned function returns at once.
func (c *Controller) WatchEnd(action EndAction, ender Ender, after func(time.Duration) <-chan time.Time) func(ctx context.Context) {
	if action == EndNone || ender == nil {
		c.log.Info("post-termination action set", "action", EndNone)
		return func(context.Context) {}
	}
	if after == nil {
		after = time.After
	}
	wake, cancel := c.subscribe()
	// The ended lifecycle acted on (or found at the start), by its start time.
	var done time.Time
	if rec, err := c.Load(); err == nil {
		if _, ended := endOf(rec); ended {
			done = rec.StartTime
			c.log.Info("compute had ended before compute-api started: no post-termination action",
				"status", rec.Status, "action", action)
		}
	}
	c.log.Info("post-termination action set", "action", action)
	return func(ctx context.Context) {
		defer cancel()
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
	// compute_ctl answers /terminate before it exits; a Terminate still in progress here
	// (its Postgres stop job ends just after the stop hook recorded terminated) must
	// answer before the action can stop compute-api.
	if c.terminating.busy() {
		log.Info("post-termination action: waiting for /terminate to answer first")
		if err := c.terminating.wait(ctx); err != nil {
			return false
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
		if err != nil && ctx.Err() != nil {
			// The stop reached compute-api before systemd's answer did: it is being
			// stopped, which is the action taken.
			err = nil
		}
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

// inflight counts calls in progress and lets another goroutine wait until there are none.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (f *inflight) begin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
}

func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
}

func (f *inflight) busy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n > 0
}

// wait returns once no call is in progress, or ctx's error.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
