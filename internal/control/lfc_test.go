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

func (s *scriptedLFC) LFCPrewarm(context.Context, string) error       { return s.next() }
func (s *scriptedLFC) LFCOffload(context.Context) error               { return s.next() }
func (s *scriptedLFC) LFCCancelPrewarm(context.Context) (bool, error) { return true, s.next() }

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
	// No bus connection at all.
	r = newRig(t)
	if err := r.ctl.LFCOffload(context.Background()); !errors.Is(err, lfcstate.ErrUnavailable) {
		t.Errorf("without an LFC client = %v", err)
	}
}
