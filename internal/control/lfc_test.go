package control

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/state"
)

// scriptedLFC answers the calls with the errors queued, then with nil.
type scriptedLFC struct {
	mu      sync.Mutex
	answers []error
	calls   int
}

func (s *scriptedLFC) next() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.answers) == 0 {
		return nil
	}
	err := s.answers[0]
	s.answers = s.answers[1:]
	return err
}

// A call on a context that has ended fails, as a D-Bus call would.
func (s *scriptedLFC) answer(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.next()
}

func (s *scriptedLFC) LFCPrewarm(ctx context.Context, _ string) error { return s.answer(ctx) }
func (s *scriptedLFC) LFCOffload(ctx context.Context) error           { return s.answer(ctx) }
func (s *scriptedLFC) LFCCancelPrewarm(ctx context.Context) (bool, error) {
	return true, s.answer(ctx)
}

func TestLFCStatesBeforeAnyPublished(t *testing.T) {
	r := newRig(t)
	st, err := r.ctl.LFCStates()
	if err != nil {
		t.Fatal(err)
	}
	if st.Prewarm.Status != lfcstate.PrewarmNotPrewarmed || st.Offload.Status != lfcstate.OffloadNotOffloaded {
		t.Errorf("initial states = %+v", st)
	}
}

// Right after running, the monitor may not have taken the lifecycle yet: a missing monitor
// or its "not running" is retried while the record says running, and passed on at once
// otherwise.
func TestLFCRetriesWhileTheMonitorCatchesUp(t *testing.T) {
	notRunning := &lfcstate.RefusedError{Refusal: lfcstate.RefusedNotRunning, Msg: "compute is not running"}
	unavailable := fmt.Errorf("%w: no owner", lfcstate.ErrUnavailable)
	busy := &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: "busy"}

	l := &scriptedLFC{answers: []error{unavailable, notRunning, unavailable}}
	r := newRig(t, func(d *Deps) { d.LFC = l })
	r.set(state.Running, nil)
	if err := r.ctl.LFCPrewarm(context.Background(), ""); err != nil || l.calls != 4 {
		t.Fatalf("prewarm while the monitor catches up = %v after %d calls, want success after 4", err, l.calls)
	}
	// A refusal on its merits is passed on at once.
	l = &scriptedLFC{answers: []error{busy}}
	r = newRig(t, func(d *Deps) { d.LFC = l })
	r.set(state.Running, nil)
	if err := r.ctl.LFCOffload(context.Background()); !errors.Is(err, busy) || l.calls != 1 {
		t.Errorf("busy = %v after %d calls", err, l.calls)
	}
	// Not running: no retry.
	l = &scriptedLFC{answers: []error{notRunning}}
	r = newRig(t, func(d *Deps) { d.LFC = l })
	r.set(state.Init, nil)
	if err := r.ctl.LFCOffload(context.Background()); !errors.Is(err, notRunning) || l.calls != 1 {
		t.Errorf("not running during init = %v after %d calls", err, l.calls)
	}
	// A caller that went away does not cut the call.
	l = &scriptedLFC{}
	r = newRig(t, func(d *Deps) { d.LFC = l })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := r.ctl.LFCCancelPrewarm(ctx); err != nil || !ok {
		t.Errorf("cancel with a cancelled caller = %v, %v", ok, err)
	}
	// During a reconfiguration the monitor serves too: retried as while running.
	l = &scriptedLFC{answers: []error{unavailable}}
	r = newRig(t, func(d *Deps) { d.LFC = l })
	r.set(state.Configuration, nil)
	if err := r.ctl.LFCOffload(context.Background()); err != nil || l.calls != 2 {
		t.Errorf("during a reconfiguration = %v after %d calls, want success after 2", err, l.calls)
	}
	// No answer in time, or no extension: passed on at once, never retried (the first may
	// have been taken).
	for _, e := range []error{fmt.Errorf("%w: timeout", lfcstate.ErrNoAnswer), &lfcstate.RefusedError{Refusal: lfcstate.RefusedNoExtension, Msg: "no"}} {
		l = &scriptedLFC{answers: []error{e}}
		r = newRig(t, func(d *Deps) { d.LFC = l })
		r.set(state.Running, nil)
		if err := r.ctl.LFCPrewarm(context.Background(), ""); !errors.Is(err, e) || l.calls != 1 {
			t.Errorf("%v: %v after %d calls, want it passed on after 1", e, err, l.calls)
		}
	}
	// No bus connection at all.
	r = newRig(t)
	if err := r.ctl.LFCOffload(context.Background()); !errors.Is(err, lfcstate.ErrUnavailable) {
		t.Errorf("without an LFC client = %v", err)
	}
}
