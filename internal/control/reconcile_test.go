package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// crashAfterAccept leaves the record as a compute-api killed right after POST /configure
// recorded configuration_pending on a running compute leaves it.
func crashAfterAccept(r *rig) {
	r.t.Helper()
	r.set(state.Running, nil)
	if _, _, err := r.store.AcceptConfig([]state.Status{state.Running}, nil); err != nil {
		r.t.Fatal(err)
	}
}

// crashAfterBeginTermination leaves the record as a compute-api killed right after POST
// /terminate recorded termination_pending_*.
func crashAfterBeginTermination(r *rig, from state.Status, storage spec.StorageMode, mode spec.ModeType, immediate bool) {
	r.t.Helper()
	r.set(from, func(rec *state.Record) { rec.Storage, rec.Mode = storage, mode })
	if _, _, err := r.store.BeginTermination(immediate); err != nil {
		r.t.Fatal(err)
	}
}

func TestReconcileInterruptedConfigure(t *testing.T) {
	r := newRig(t)
	crashAfterAccept(r)
	// Before reconciling, the compute answers every /configure and /terminate with 412:
	// the state that issue 12 found stuck for good.
	var wrong *state.WrongStatusError
	if _, err := r.ctl.Configure(context.Background(), []byte(`{}`), parsed(t)); !errors.As(err, &wrong) {
		t.Fatalf("configure before reconciling: %v", err)
	}
	if _, err := r.ctl.Terminate(context.Background(), false); !errors.As(err, &wrong) {
		t.Fatalf("terminate before reconciling: %v", err)
	}

	r.units.states = UnitStates{Init: "active", Postgres: "active", Configure: "active"}
	r.units.reconfigure = func() error {
		if _, err := r.store.BeginReconfiguration(); err != nil {
			return err
		}
		_, err := r.store.MarkRunning(nil)
		return err
	}
	action, err := r.ctl.Reconcile(context.Background())
	if err != nil || action != ReconcileReconfigured {
		t.Fatalf("reconcile: %s %v", action, err)
	}
	r.waitStatus(state.Running)
	if !strings.Contains(r.logs.String(), ReconcileLogMsg) {
		t.Errorf("no %q in the log:\n%s", ReconcileLogMsg, r.logs)
	}
	// And the compute takes requests again.
	if _, err := r.ctl.Configure(context.Background(), []byte(`{}`), parsed(t)); err != nil {
		t.Fatalf("configure after reconciling: %v", err)
	}
	if r.units.reconfigures != 2 {
		t.Errorf("%d reconfigurations, want 2", r.units.reconfigures)
	}
}

func TestReconcileInterruptedConfigureFails(t *testing.T) {
	r := newRig(t)
	crashAfterAccept(r)
	r.units.states = UnitStates{Init: "active", Postgres: "active", Configure: "failed"}
	r.units.reconfigureErr = errors.New("access denied")
	action, err := r.ctl.Reconcile(context.Background())
	var failed *FailedError
	if action != ReconcileReconfigured || !errors.As(err, &failed) || !strings.Contains(failed.Msg, "access denied") {
		t.Fatalf("reconcile: %s %v", action, err)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "reconfigure: access denied") {
		t.Fatalf("record: %s %v", rec.Status, rec.Error)
	}
}

func TestReconcileLeavesAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status state.Status
		states UnitStates
	}{
		{"configure step already restarted", state.ConfigurationPending, UnitStates{"active", "active", "activating"}},
		{"compute-init waits for the config", state.ConfigurationPending, UnitStates{"activating", "inactive", "inactive"}},
		{"compute stopped: the next start takes it", state.ConfigurationPending, UnitStates{"inactive", "inactive", "inactive"}},
		{"postgres starting", state.ConfigurationPending, UnitStates{"active", "activating", "inactive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.set(tc.status, nil)
			r.units.states = tc.states
			action, err := r.ctl.Reconcile(context.Background())
			if err != nil || action != ReconcileNone {
				t.Fatalf("reconcile: %s %v", action, err)
			}
			if r.status() != tc.status || r.units.reconfigures+r.units.cancelStartups+len(r.units.stops) != 0 {
				t.Errorf("acted: status %s, units %+v", r.status(), r.units)
			}
		})
	}
	// Statuses that are not pending: the units are not even asked.
	for _, st := range []state.Status{state.Empty, state.Init, state.Running, state.Configuration, state.Failed, state.Terminated} {
		r := newRig(t)
		r.set(st, nil)
		r.units.statesErr = errors.New("must not be asked")
		if action, err := r.ctl.Reconcile(context.Background()); err != nil || action != ReconcileNone || r.units.stateQueries != 0 {
			t.Errorf("%s: %s %v (%d queries)", st, action, err, r.units.stateQueries)
		}
	}
	// No record at all.
	r := newRig(t)
	if action, err := r.ctl.Reconcile(context.Background()); err != nil || action != ReconcileNone {
		t.Errorf("no record: %s %v", action, err)
	}
}

func TestReconcileInterruptedTerminate(t *testing.T) {
	t.Run("standalone, postgres still running", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "standalone", "primary", false)
		var wrong *state.WrongStatusError
		if _, err := r.ctl.Terminate(context.Background(), false); !errors.As(err, &wrong) {
			t.Fatalf("terminate before reconciling: %v", err)
		}
		r.units.states = UnitStates{"active", "active", "active"}
		action, err := r.ctl.Reconcile(context.Background())
		if err != nil || action != ReconcileStoppedPostgres {
			t.Fatalf("reconcile: %s %v", action, err)
		}
		if len(r.units.stops) != 1 || r.units.stops[0] {
			t.Errorf("stops %v, want one fast stop", r.units.stops)
		}
		res, err := r.ctl.Terminate(context.Background(), false)
		if err != nil || !res.Already || res.LSN != nil {
			t.Errorf("terminate after reconciling: %+v %v", res, err)
		}
	})
	t.Run("immediate keeps its mode", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "standalone", "primary", true)
		r.units.states = UnitStates{"active", "deactivating", "active"}
		if _, err := r.ctl.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(r.units.stops) != 1 || !r.units.stops[0] || r.status() != state.Terminated {
			t.Errorf("stops %v, status %s", r.units.stops, r.status())
		}
	})
	t.Run("neon primary: the stop hook's LSN", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "neon", "primary", false)
		r.units.states = UnitStates{"active", "active", "active"}
		r.units.hook = func() error {
			lsn := testLSN
			_, _, err := r.store.CompleteTermination(state.ActorStopHook, &lsn)
			return err
		}
		if _, err := r.ctl.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Terminated || rec.TerminateLSN == nil || *rec.TerminateLSN != testLSN {
			t.Errorf("record %s %v", rec.Status, rec.TerminateLSN)
		}
	})
	t.Run("neon primary stopped without its LSN fails", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "neon", "primary", false)
		r.units.states = UnitStates{"active", "failed", "inactive"}
		action, err := r.ctl.Reconcile(context.Background())
		var failed *FailedError
		if action != ReconcileCancelledStartup || !errors.As(err, &failed) {
			t.Fatalf("reconcile: %s %v", action, err)
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "final safekeeper sync") {
			t.Errorf("record %s %v", rec.Status, rec.Error)
		}
	})
	t.Run("terminated while compute-init waited", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Empty, "", "", false)
		r.units.states = UnitStates{"activating", "inactive", "inactive"}
		action, err := r.ctl.Reconcile(context.Background())
		if err != nil || action != ReconcileCancelledStartup || r.units.cancelStartups != 1 || r.status() != state.Terminated {
			t.Fatalf("reconcile: %s %v, %d cancels, status %s", action, err, r.units.cancelStartups, r.status())
		}
	})
	t.Run("stop fails", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "standalone", "primary", false)
		r.units.states = UnitStates{"active", "active", "active"}
		r.units.stopErr = errors.New("Access denied")
		_, err := r.ctl.Reconcile(context.Background())
		var failed *FailedError
		if !errors.As(err, &failed) || r.status() != state.Failed {
			t.Fatalf("reconcile: %v, status %s", err, r.status())
		}
	})
	t.Run("unit states unknown", func(t *testing.T) {
		r := newRig(t)
		crashAfterBeginTermination(r, state.Running, "standalone", "primary", false)
		r.units.statesErr = errors.New("bus gone")
		if _, err := r.ctl.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "bus gone") {
			t.Fatalf("reconcile: %v", err)
		}
		if r.status() != state.TerminationPendingFast {
			t.Errorf("status %s changed without knowing the units", r.status())
		}
	})
}

// With HoldUntilReconciled, a /terminate that comes while the reconciliation runs waits
// for it and then answers as after any termination (rather than 412 for the pending
// record), and a caller that gives up gets its context's error.
func TestHoldUntilReconciled(t *testing.T) {
	r := newRig(t)
	crashAfterBeginTermination(r, state.Running, "standalone", "primary", false)
	r.ctl.HoldUntilReconciled()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.ctl.Terminate(gone, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("terminate whose caller left before the reconciliation: %v", err)
	}
	type result struct {
		res Termination
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.ctl.Terminate(context.Background(), false)
		done <- result{res, err}
	}()
	select {
	case got := <-done:
		t.Fatalf("terminate answered before the reconciliation: %+v %v", got.res, got.err)
	case <-time.After(100 * time.Millisecond):
	}
	r.units.states = UnitStates{"active", "active", "active"}
	if _, err := r.ctl.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got.err != nil || !got.res.Already {
			t.Fatalf("terminate after the reconciliation: %+v %v", got.res, got.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("terminate still waits after the reconciliation")
	}
}
