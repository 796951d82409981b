package lfc

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// Snapshot is the machine's state at one moment. Seq grows with every change, so a
// consumer of OnChange can drop a snapshot older than one it already has.
type Snapshot struct {
	Seq      uint64                `json:"seq"`
	Prewarm  lfcstate.PrewarmState `json:"prewarm"`
	Offload  lfcstate.OffloadState `json:"offload"`
	Counters lfcstate.Counters     `json:"counters"`
}

// MachineOptions configures NewMachine.
type MachineOptions struct {
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// OffloadInterval is offload_lfc_interval_seconds; zero means no periodic offload.
	// The first periodic offload is due one interval after NewMachine, as Neon's.
	OffloadInterval time.Duration
	// OnChange, if set, is called after every change (outside the machine's lock; calls
	// may overlap, hence Snapshot.Seq). It must not block for long.
	OnChange func(Snapshot)
	// Restore, if set, is the snapshot a previous process published (the monitor
	// restarted): states, counters and Seq carry on. A prewarm or offload it shows running
	// did not survive the restart: it is recorded failed (and counted), since a prewarm
	// cut short leaves an incomplete LFC that the periodic offload must not upload. An
	// empty status is the initial one; an unknown prewarm status (a newer version's record)
	// becomes failed (its LFC is not known to be complete), an unknown offload status the
	// initial one. When
	// restoring changed anything, that is a change like any other: Seq grows by one and
	// OnChange is called once, from NewMachine, with the new snapshot (so the caller need
	// not publish it itself).
	Restore *Snapshot
}

// Interrupted is the error of a prewarm or offload that was running when the process
// that ran it ended (MachineOptions.Restore).
const Interrupted = "interrupted: the process running it restarted"

// Machine is the prewarm/offload state machine. It does no I/O: Core (or a test) asks it
// whether an operation may start, runs the operation, and reports the outcome. It is safe
// for concurrent use.
//
// The rules:
//   - a prewarm starts unless one is running (ErrPrewarmRunning);
//   - a manual offload starts unless one is running (ErrOffloadRunning) or a prewarm is
//     running (ErrPrewarmInProgress); after a failed or cancelled prewarm it starts;
//   - a periodic offload starts only when it is due and the prewarm state is completed,
//     not_prewarmed or skipped, and no offload is running;
//   - a prewarm taken while an offload runs marks that offload overtaken
//     (PrewarmStartedDuring): Core then ends it failed without uploading;
//   - CancelPrewarm cancels a running prewarm's context; the prewarm ends cancelled when
//     its run reports back (until then it is still prewarming, so no second prewarm can
//     overlap the first one's query).
type Machine struct {
	now      func() time.Time
	interval time.Duration
	onChange func(Snapshot)

	mu         sync.Mutex
	snap       Snapshot
	nextTick   time.Time
	prewarmRun *PrewarmRun
	offloadRun *OffloadRun
	// prewarmGen counts the prewarms taken by this machine; an OffloadRun records it at
	// its start (see PrewarmStartedDuring).
	prewarmGen uint64
}

// NewMachine returns a machine in not_prewarmed / not_offloaded.
func NewMachine(o MachineOptions) *Machine {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	m := &Machine{now: now, interval: o.OffloadInterval, onChange: o.OnChange}
	m.snap.Prewarm.Status = lfcstate.PrewarmNotPrewarmed
	m.snap.Offload.Status = lfcstate.OffloadNotOffloaded
	changed := false
	if r := o.Restore; r != nil {
		m.snap = *r
		switch st := m.snap.Prewarm.Status; {
		case st == "":
			m.snap.Prewarm = lfcstate.PrewarmState{Status: lfcstate.PrewarmNotPrewarmed}
		case !st.Valid():
			// Not known to be complete: failed, which keeps the periodic offload off (as
			// not_prewarmed would not).
			m.snap.Prewarm = lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "unknown prewarm status " + strconv.Quote(string(st)) + " in the state record"}
		}
		if !m.snap.Offload.Status.Valid() {
			m.snap.Offload = lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded}
		}
		if m.snap.Prewarm.Status == lfcstate.PrewarmPrewarming {
			m.snap.Prewarm = lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: Interrupted}
			m.snap.Counters.PrewarmErrors++
		}
		if m.snap.Offload.Status == lfcstate.OffloadOffloading {
			m.snap.Offload = lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: Interrupted}
			m.snap.Counters.OffloadErrors++
		}
		changed = m.snap != *r
	}
	if m.interval > 0 {
		m.nextTick = now().Add(m.interval)
	}
	if changed {
		// The interrupted runs (or a state replaced) are recorded now: a new Seq,
		// announced like any change (no one else holds m yet, so no lock is needed).
		m.announce(m.changed())
	}
	return m
}

// Snapshot returns the current state.
func (m *Machine) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

// Prewarm returns the prewarm state.
func (m *Machine) Prewarm() lfcstate.PrewarmState { return m.Snapshot().Prewarm }

// Offload returns the offload state.
func (m *Machine) Offload() lfcstate.OffloadState { return m.Snapshot().Offload }

// Counters returns the counters.
func (m *Machine) Counters() lfcstate.Counters { return m.Snapshot().Counters }

// changed bumps Seq and returns the snapshot to announce; call with mu held.
func (m *Machine) changed() Snapshot {
	m.snap.Seq++
	return m.snap
}

func (m *Machine) announce(s Snapshot) {
	if m.onChange != nil {
		m.onChange(s)
	}
}

// PrewarmRun is a prewarm that was started; its Context is cancelled by CancelPrewarm.
type PrewarmRun struct {
	ctx       context.Context
	cancel    context.CancelFunc
	cancelled bool // by CancelPrewarm; guarded by Machine.mu
}

// Context is the run's context: done when the prewarm is cancelled (or its parent is).
func (r *PrewarmRun) Context() context.Context { return r.ctx }

// StartPrewarm takes a prewarm: the state becomes prewarming and Prewarms counts it. It
// returns ErrPrewarmRunning while one runs. The run's context derives from parent.
func (m *Machine) StartPrewarm(parent context.Context) (*PrewarmRun, error) {
	m.mu.Lock()
	if m.prewarmRun != nil {
		m.mu.Unlock()
		return nil, ErrPrewarmRunning
	}
	ctx, cancel := context.WithCancel(parent)
	r := &PrewarmRun{ctx: ctx, cancel: cancel}
	m.prewarmRun = r
	m.prewarmGen++
	m.snap.Prewarm = lfcstate.PrewarmState{Status: lfcstate.PrewarmPrewarming}
	m.snap.Counters.Prewarms++
	s := m.changed()
	m.mu.Unlock()
	m.announce(s)
	return r, nil
}

// CancelPrewarm cancels the running prewarm and reports whether one was running. The
// state stays prewarming until the run finishes (FinishPrewarm then records cancelled).
// With no prewarm running it does nothing (Neon would cancel the next prewarm instead).
func (m *Machine) CancelPrewarm() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.prewarmRun
	if r == nil {
		return false
	}
	r.cancelled = true
	r.cancel()
	return true
}

// FinishPrewarm records the outcome of run: result must be completed, skipped or failed.
// A run cancelled by CancelPrewarm that did not complete ends cancelled, whatever result
// says (its error is the cancellation). A failed result counts in PrewarmErrors. A run
// that is not the current one is ignored.
func (m *Machine) FinishPrewarm(run *PrewarmRun, result lfcstate.PrewarmState) {
	m.mu.Lock()
	if run == nil || m.prewarmRun != run {
		m.mu.Unlock()
		return
	}
	m.prewarmRun = nil
	run.cancel()
	switch {
	case run.cancelled && result.Status != lfcstate.PrewarmCompleted:
		result = lfcstate.PrewarmState{Status: lfcstate.PrewarmCancelled}
	case result.Status == lfcstate.PrewarmCompleted, result.Status == lfcstate.PrewarmSkipped:
	default:
		if result.Status != lfcstate.PrewarmFailed {
			result = lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "prewarm ended in state " + string(result.Status)}
		}
		m.snap.Counters.PrewarmErrors++
	}
	m.snap.Prewarm = result
	s := m.changed()
	m.mu.Unlock()
	m.announce(s)
}

// OffloadRun is an offload that was started.
type OffloadRun struct {
	// Periodic is true for an offload started by StartPeriodicOffload.
	Periodic bool
	// prewarmGen is Machine.prewarmGen when the offload started.
	prewarmGen uint64
}

// ErrPrewarmDuringOffload is the error of an offload that a prewarm overtook: the
// prewarm was taken after the offload started (an offload never starts while a prewarm
// runs), so the LFC state the offload read may be incomplete, and it is not uploaded.
var ErrPrewarmDuringOffload = errors.New("LFC offload not uploaded: a prewarm started during the offload, and an incomplete LFC state must not be uploaded")

// PrewarmStartedDuring reports whether a prewarm was taken since run started (it may
// have ended since: the LFC state read meanwhile may still be one of its incomplete
// states). Core asks after reading the LFC state and again right before uploading it,
// and then ends the offload failed with ErrPrewarmDuringOffload instead of uploading.
func (m *Machine) PrewarmStartedDuring(run *OffloadRun) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return run != nil && m.prewarmGen != run.prewarmGen
}

// StartOffload takes a manual offload (POST /lfc/offload): the state becomes offloading
// and Offloads counts it. It returns ErrOffloadRunning while an offload runs and
// ErrPrewarmInProgress while a prewarm runs. After a failed prewarm it is allowed: it is
// the operator's way out.
func (m *Machine) StartOffload() (*OffloadRun, error) {
	m.mu.Lock()
	switch {
	case m.offloadRun != nil:
		m.mu.Unlock()
		return nil, ErrOffloadRunning
	case m.prewarmRun != nil:
		m.mu.Unlock()
		return nil, ErrPrewarmInProgress
	}
	r := m.beginOffload(false)
	s := m.changed()
	m.mu.Unlock()
	m.announce(s)
	return r, nil
}

// beginOffload marks an offload running; call with mu held.
func (m *Machine) beginOffload(periodic bool) *OffloadRun {
	r := &OffloadRun{Periodic: periodic, prewarmGen: m.prewarmGen}
	m.offloadRun = r
	m.snap.Offload = lfcstate.OffloadState{Status: lfcstate.OffloadOffloading}
	m.snap.Counters.Offloads++
	return r
}

// periodicAllowed says whether the prewarm state allows a periodic offload; call with mu
// held.
func (m *Machine) periodicAllowed() (bool, string) {
	switch m.snap.Prewarm.Status {
	case lfcstate.PrewarmCompleted, lfcstate.PrewarmNotPrewarmed, lfcstate.PrewarmSkipped:
	case lfcstate.PrewarmPrewarming:
		return false, "a prewarm is in progress"
	default:
		return false, "the last prewarm ended " + string(m.snap.Prewarm.Status)
	}
	if m.offloadRun != nil {
		return false, "an offload is running"
	}
	return true, ""
}

// NextPeriodicOffload is when the next periodic offload tick is due (zero without a
// periodic offload).
func (m *Machine) NextPeriodicOffload() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nextTick
}

// PeriodicOffloadDue reports whether StartPeriodicOffload would start an offload now.
func (m *Machine) PeriodicOffloadDue() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.interval <= 0 || m.now().Before(m.nextTick) {
		return false
	}
	ok, _ := m.periodicAllowed()
	return ok
}

// StartPeriodicOffload is the periodic tick. When the tick is due it moves the schedule
// to the next tick after now (ticks missed meanwhile are not made up), and then starts an
// offload if the prewarm state is completed, not_prewarmed or skipped and none runs. It
// returns the run, or nil and why not ("not due", "a prewarm is in progress", ...).
func (m *Machine) StartPeriodicOffload() (*OffloadRun, string) {
	m.mu.Lock()
	if m.interval <= 0 {
		m.mu.Unlock()
		return nil, "no periodic offload configured"
	}
	now := m.now()
	if now.Before(m.nextTick) {
		m.mu.Unlock()
		return nil, "not due"
	}
	for !now.Before(m.nextTick) {
		m.nextTick = m.nextTick.Add(m.interval)
	}
	if ok, why := m.periodicAllowed(); !ok {
		m.mu.Unlock()
		return nil, why
	}
	r := m.beginOffload(true)
	s := m.changed()
	m.mu.Unlock()
	m.announce(s)
	return r, ""
}

// FinishOffload records the outcome of run: completed, skipped (empty LFC state) or
// failed (counted in OffloadErrors). A run that is not the current one is ignored.
func (m *Machine) FinishOffload(run *OffloadRun, result lfcstate.OffloadState) {
	m.mu.Lock()
	if run == nil || m.offloadRun != run {
		m.mu.Unlock()
		return
	}
	m.offloadRun = nil
	switch result.Status {
	case lfcstate.OffloadCompleted, lfcstate.OffloadSkipped:
	default:
		if result.Status != lfcstate.OffloadFailed {
			result = lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "offload ended in state " + string(result.Status)}
		}
		m.snap.Counters.OffloadErrors++
	}
	m.snap.Offload = result
	s := m.changed()
	m.mu.Unlock()
	m.announce(s)
}
