package state

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
)

// actorAllowed is the actor x move table written out independently of actorMoves
// (docs/architecture.md, "The state record").
var actorAllowed = map[Actor]map[[2]Status]bool{
	ActorAPI: {
		{Empty, ConfigurationPending}: true, {Running, ConfigurationPending}: true, {Failed, ConfigurationPending}: true,
		{Empty, TerminationPendingFast}: true, {Empty, TerminationPendingImmediate}: true,
		{Running, TerminationPendingFast}: true, {Running, TerminationPendingImmediate}: true,
		{TerminationPendingFast, Terminated}: true, {TerminationPendingImmediate, Terminated}: true,
		{ConfigurationPending, Failed}: true, {Configuration, Failed}: true,
		{TerminationPendingFast, Failed}: true, {TerminationPendingImmediate, Failed}: true,
		// POST /refresh_configuration and the refresh compute-api runs.
		{Running, RefreshConfigurationPending}: true, {Failed, RefreshConfigurationPending}: true,
		{RefreshConfigurationPending, RefreshConfiguration}: true, {RefreshConfiguration, Running}: true,
		{RefreshConfiguration, RefreshConfigurationPending}: true, {RefreshConfiguration, Failed}: true,
		{RefreshConfigurationPending, TerminationPendingFast}: true, {RefreshConfigurationPending, TerminationPendingImmediate}: true,
		{RefreshConfigurationPending, Failed}:               true,
		{RefreshConfigurationPending, ConfigurationPending}: true, // a pushed /configure
	},
	ActorInit: {
		{Empty, Init}: true, {ConfigurationPending, Init}: true,
		{Empty, Failed}: true, {ConfigurationPending, Failed}: true, {Init, Failed}: true,
	},
	ActorConfigure: {
		{Init, Running}: true, {ConfigurationPending, Configuration}: true, {Configuration, Running}: true,
		{Empty, Failed}: true, {ConfigurationPending, Failed}: true, {Init, Failed}: true, {Configuration, Failed}: true,
		{RefreshConfiguration, Running}: true, {RefreshConfiguration, RefreshConfigurationPending}: true, {RefreshConfiguration, Failed}: true,
	},
	ActorStopHook: {
		{TerminationPendingFast, Terminated}: true, {TerminationPendingImmediate, Terminated}: true,
		{TerminationPendingFast, Failed}: true, {TerminationPendingImmediate, Failed}: true,
		{ConfigurationPending, Failed}: true, {Init, Failed}: true, {Running, Failed}: true, {Configuration, Failed}: true,
		{RefreshConfigurationPending, Failed}: true, {RefreshConfiguration, Failed}: true,
	},
	ActorMonitor: {},
}

func TestCanMoveExhaustive(t *testing.T) {
	if len(Actors) != len(actorAllowed) {
		t.Fatalf("Actors has %d actors, the test table %d", len(Actors), len(actorAllowed))
	}
	covered := map[[2]Status]bool{}
	for _, a := range Actors {
		want, ok := actorAllowed[a]
		if !ok {
			t.Fatalf("actor %s missing from the test table", a)
		}
		for _, from := range All {
			for _, to := range All {
				w := want[[2]Status{from, to}]
				if got := CanMove(a, from, to); got != w {
					t.Errorf("CanMove(%s, %s, %s) = %v, want %v", a, from, to, got, w)
				}
				if w {
					covered[[2]Status{from, to}] = true
					if !allowed[[2]Status{from, to}] {
						t.Errorf("%s's move %s -> %s is not in the transition table", a, from, to)
					}
				}
			}
		}
		if len(MovesOf(a)) != len(want) {
			t.Errorf("%s has %d moves, want %d", a, len(MovesOf(a)), len(want))
		}
		if got := MayBeginLifecycle(a); got != (a == ActorInit) {
			t.Errorf("MayBeginLifecycle(%s) = %v", a, got)
		}
	}
	// Every transition of the table has an actor that makes it.
	for m := range allowed {
		if !covered[m] {
			t.Errorf("no actor makes %s -> %s", m[0], m[1])
		}
	}
	if CanMove("bogus", Empty, Init) || CanMove(ActorInit, Init, Init) {
		t.Error("unknown actor or self-move allowed")
	}
	if msg := (&ActorError{Actor: ActorMonitor, From: Running, To: Failed}).Error(); msg != "monitor may not move the status from running to failed" {
		t.Errorf("ActorError = %q", msg)
	}
}

// at writes a record in status st directly (as TestIllegalTransitionLeavesRecord does).
func at(t *testing.T, st Status) *Store {
	t.Helper()
	s := open(t)
	if err := s.write(&Record{Status: st, StartTime: time.Now().UTC()}, 0); err != nil {
		t.Fatal(err)
	}
	return s
}

// op is one lifecycle operation run from every status.
type op struct {
	name string
	// from: the statuses it moves from; to: where it goes.
	from []Status
	to   Status
	// noop: statuses it leaves alone without an error.
	noop []Status
	run  func(s *Store) error
}

func TestOperationsFromEveryStatus(t *testing.T) {
	ops := []op{
		{name: "AcceptConfig", from: []Status{Empty, Running, Failed}, to: ConfigurationPending,
			run: func(s *Store) error {
				_, _, err := s.AcceptConfig([]Status{Empty, Running, Failed}, nil)
				return err
			}},
		{name: "BeginInit", from: []Status{Empty, ConfigurationPending}, to: Init,
			run: func(s *Store) error { _, err := s.BeginInit(nil); return err }},
		{name: "BeginReconfiguration", from: []Status{ConfigurationPending}, to: Configuration,
			run: func(s *Store) error { _, err := s.BeginReconfiguration(); return err }},
		{name: "MarkRunning", from: []Status{Init, Configuration, RefreshConfiguration}, to: Running,
			run: func(s *Store) error { _, err := s.MarkRunning(nil); return err }},
		{name: "BeginTermination", from: []Status{Empty, Running, RefreshConfigurationPending}, to: TerminationPendingImmediate,
			run: func(s *Store) error { _, _, err := s.BeginTermination(true); return err }},
		{name: "CompleteTermination(api)", from: []Status{TerminationPendingFast, TerminationPendingImmediate}, to: Terminated,
			noop: []Status{Empty, ConfigurationPending, Init, Running, Configuration, Failed, Terminated, RefreshConfigurationPending, RefreshConfiguration},
			run:  func(s *Store) error { _, _, err := s.CompleteTermination(ActorAPI, nil); return err }},
		{name: "Fail(api, reconfiguring)", from: []Status{ConfigurationPending, Configuration}, to: Failed,
			noop: []Status{Empty, Init, Running, Failed, TerminationPendingFast, TerminationPendingImmediate, Terminated, RefreshConfigurationPending, RefreshConfiguration},
			run: func(s *Store) error {
				_, _, err := s.Fail(ActorAPI, "boom", ConfigurationPending, Configuration)
				return err
			}},
		{name: "Fail(compute-init)", from: []Status{Empty, ConfigurationPending, Init}, to: Failed,
			noop: []Status{Running, Configuration, Failed, TerminationPendingFast, TerminationPendingImmediate, Terminated, RefreshConfigurationPending, RefreshConfiguration},
			run:  func(s *Store) error { _, _, err := s.Fail(ActorInit, "boom"); return err }},
		{name: "Fail(configure)", from: []Status{Empty, ConfigurationPending, Init, Configuration, RefreshConfiguration}, to: Failed,
			noop: []Status{Running, Failed, TerminationPendingFast, TerminationPendingImmediate, Terminated, RefreshConfigurationPending},
			run:  func(s *Store) error { _, _, err := s.Fail(ActorConfigure, "boom"); return err }},
		{name: "Fail(stop-hook)", from: []Status{ConfigurationPending, Init, Running, Configuration, RefreshConfigurationPending, RefreshConfiguration}, to: Failed,
			noop: []Status{Empty, Failed, TerminationPendingFast, TerminationPendingImmediate, Terminated},
			run:  func(s *Store) error { _, _, err := s.Fail(ActorStopHook, "boom"); return err }},
		{name: "Fail(stop-hook, terminating)", from: []Status{TerminationPendingFast, TerminationPendingImmediate}, to: Failed,
			noop: []Status{Empty, ConfigurationPending, Init, Running, Configuration, Failed, Terminated, RefreshConfigurationPending, RefreshConfiguration},
			run: func(s *Store) error {
				_, _, err := s.Fail(ActorStopHook, "boom", TerminationPendingFast, TerminationPendingImmediate)
				return err
			}},
		// POST /refresh_configuration and the refresh.
		{name: "RequestRefresh", from: []Status{Running, Failed}, to: RefreshConfigurationPending,
			noop: []Status{Init, RefreshConfigurationPending},
			run:  func(s *Store) error { _, err := s.RequestRefresh(); return err }},
		{name: "BeginRefresh", from: []Status{RefreshConfigurationPending}, to: RefreshConfiguration,
			run: func(s *Store) error { _, err := s.BeginRefresh(); return err }},
		{name: "FinishRefresh", from: []Status{RefreshConfiguration}, to: Running,
			run: func(s *Store) error { _, err := s.FinishRefresh(); return err }},
		{name: "RetryRefresh(api)", from: []Status{RefreshConfiguration}, to: RefreshConfigurationPending,
			run: func(s *Store) error { _, err := s.RetryRefresh(ActorAPI, "later"); return err }},
		{name: "RetryRefresh(configure)", from: []Status{RefreshConfiguration}, to: RefreshConfigurationPending,
			run: func(s *Store) error { _, err := s.RetryRefresh(ActorConfigure, "later"); return err }},
		// The monitor has no move to failed: refused, the record left alone.
		{name: "Fail(monitor)", run: func(s *Store) error { _, _, err := s.Fail(ActorMonitor, "boom"); return err }},
	}
	for _, o := range ops {
		for _, st := range All {
			t.Run(o.name+"/"+string(st), func(t *testing.T) {
				s := at(t, st)
				err := o.run(s)
				r, lerr := s.Load()
				if lerr != nil {
					t.Fatal(lerr)
				}
				switch {
				case slices.Contains(o.from, st):
					if err != nil || r.Status != o.to || r.Seq != 2 {
						t.Fatalf("from %s: status %s seq %d err %v, want %s", st, r.Status, r.Seq, err, o.to)
					}
					if o.to == Failed && (r.Error == nil || *r.Error != "boom") {
						t.Errorf("failed without the error: %+v", r)
					}
				case slices.Contains(o.noop, st):
					if err != nil || r.Status != st || r.Seq != 1 {
						t.Fatalf("from %s: status %s seq %d err %v, want the record left alone", st, r.Status, r.Seq, err)
					}
				default:
					if err == nil || r.Status != st || r.Seq != 1 {
						t.Fatalf("from %s: status %s seq %d err %v, want a refusal", st, r.Status, r.Seq, err)
					}
				}
			})
		}
	}
}

func TestOperationErrors(t *testing.T) {
	// A status outside the operation's guard is a WrongStatusError (412 for the API).
	var wrong *WrongStatusError
	if _, _, err := at(t, Init).AcceptConfig([]Status{Empty}, nil); !errors.As(err, &wrong) || wrong.Status != Init {
		t.Errorf("AcceptConfig from init: %v", err)
	}
	if _, _, err := at(t, Failed).BeginTermination(false); !errors.As(err, &wrong) || wrong.Status != Failed {
		t.Errorf("BeginTermination from failed: %v", err)
	}
	// A move outside the table is a TransitionError naming both states.
	var te *TransitionError
	if _, err := at(t, Running).BeginInit(nil); !errors.As(err, &te) || te.From != Running || te.To != Init {
		t.Errorf("BeginInit from running: %v", err)
	}
	// init -> configuration_pending is not in the table at all.
	if _, _, err := at(t, Init).AcceptConfig([]Status{Init}, nil); !errors.As(err, &te) || te.From != Init {
		t.Errorf("AcceptConfig from init: %v", err)
	}
	// A guard that lets through a status the actor may not move from is an ActorError.
	var ae *ActorError
	if _, _, err := at(t, Running).Fail(ActorConfigure, "x", Running); !errors.As(err, &ae) || ae.Actor != ActorConfigure {
		t.Errorf("configure failing a running compute: %v", err)
	}
	// An fn may not change the status behind the operation's back.
	if _, err := at(t, Init).MarkRunning(func(r *Record) { r.Status = Failed }); !errors.Is(err, errStatusInFn) {
		t.Errorf("MarkRunning with a status-changing fn: %v", err)
	}
	// An fn's error leaves the record alone.
	boom := errors.New("boom")
	s := at(t, Empty)
	if _, _, err := s.AcceptConfig([]Status{Empty}, func(*Record) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("AcceptConfig fn error: %v", err)
	}
	if r, _ := s.Load(); r.Status != Empty || r.Seq != 1 {
		t.Errorf("record after a failed fn: %+v", r)
	}
	// A terminated compute answers with its record.
	s = at(t, TerminationPendingFast)
	lsn := "0/15D3F18"
	if _, _, err := s.CompleteTermination(ActorStopHook, &lsn); err != nil {
		t.Fatal(err)
	}
	if _, r, err := s.BeginTermination(false); !errors.Is(err, ErrAlreadyTerminated) || r.TerminateLSN == nil || *r.TerminateLSN != lsn {
		t.Errorf("BeginTermination when terminated: %+v, %v", r, err)
	}
}

func TestOperationFields(t *testing.T) {
	s := at(t, Empty)
	tenant := "t1"
	was, r, err := s.AcceptConfig([]Status{Empty}, func(r *Record) error { r.Tenant = &tenant; return nil })
	if err != nil || was != Empty || r.Status != ConfigurationPending || *r.Tenant != "t1" {
		t.Fatalf("AcceptConfig: %s %+v %v", was, r, err)
	}
	if r, err = s.BeginInit(func(r *Record) { r.Mode = "primary"; r.Storage = "neon" }); err != nil || r.Mode != "primary" {
		t.Fatalf("BeginInit: %+v %v", r, err)
	}
	if _, _, err := s.Fail(ActorInit, "first"); err != nil {
		t.Fatal(err)
	}
	// Failed again: left alone, the first error stays.
	r, failed, err := s.Fail(ActorInit, "second")
	if err != nil || failed || *r.Error != "first" {
		t.Fatalf("Fail when failed: %+v %v %v", r, failed, err)
	}
	s = at(t, Init)
	s.Update(func(r *Record) error { r.SetError("old"); return nil })
	if r, err = s.MarkRunning(func(r *Record) { r.Metrics.ConfigMs = 7 }); err != nil || r.Error != nil || r.Metrics.ConfigMs != 7 {
		t.Fatalf("MarkRunning: %+v %v", r, err)
	}
	was, r, err = s.BeginTermination(false)
	if err != nil || was != Running || r.Status != TerminationPendingFast {
		t.Fatalf("BeginTermination: %s %+v %v", was, r, err)
	}
}

// TestCompleteTerminationCondition: one condition decides who completes a termination.
func TestCompleteTerminationCondition(t *testing.T) {
	lsn := "0/16B3748"
	tests := []struct {
		storage, mode string
		lsn           *string
		done          bool
	}{
		{"standalone", "primary", nil, true},
		{"", "", nil, true}, // terminated while empty: nothing ran
		{"neon", "replica", nil, true},
		{"neon", "static", nil, true},
		{"neon", "primary", nil, false}, // waits for the stop hook's LSN
		{"neon", "primary", &lsn, true},
	}
	for _, tc := range tests {
		s := at(t, Running)
		s.Update(func(r *Record) error {
			r.Storage, r.Mode = spec.StorageMode(tc.storage), spec.ModeType(tc.mode)
			return nil
		})
		if _, _, err := s.BeginTermination(false); err != nil {
			t.Fatal(err)
		}
		r, done, err := s.CompleteTermination(ActorAPI, tc.lsn)
		if err != nil || done != tc.done {
			t.Errorf("%s/%s lsn %v: done %v err %v", tc.storage, tc.mode, tc.lsn != nil, done, err)
			continue
		}
		if done && (r.Status != Terminated || r.TerminateLSN != tc.lsn) {
			t.Errorf("%s/%s: %+v", tc.storage, tc.mode, r)
		}
		if !done && r.Status != TerminationPendingFast {
			t.Errorf("%s/%s: left as %s", tc.storage, tc.mode, r.Status)
		}
	}
}

func TestBeginLifecycle(t *testing.T) {
	for _, st := range All {
		s := at(t, st)
		s.Update(func(r *Record) error { r.Counters.MigrationFailures = map[string]uint64{"1": 2}; return nil })
		cleaned := false
		r, reset, err := s.BeginLifecycle(ActorInit, func() error { cleaned = true; return nil })
		keep := st == Empty || st == ConfigurationPending || st.TerminationPending()
		if err != nil || reset == keep || cleaned == keep {
			t.Fatalf("%s: reset %v cleaned %v err %v", st, reset, cleaned, err)
		}
		if !keep && (r.Status != Empty || r.Counters.MigrationFailures["1"] != 2) {
			t.Errorf("%s: reset record %+v", st, r)
		}
		if keep && r.Status != st {
			t.Errorf("%s: kept record has status %s", st, r.Status)
		}
	}
}

func TestUpdateRefusesEveryStatusChange(t *testing.T) {
	for m := range allowed {
		s := at(t, m[0])
		_, err := s.Update(func(r *Record) error { r.Status = m[1]; return nil })
		if !errors.Is(err, ErrStatusByUpdate) {
			t.Errorf("Update %s -> %s: %v, want ErrStatusByUpdate", m[0], m[1], err)
		}
		if r, _ := s.Load(); r.Status != m[0] || r.Seq != 1 {
			t.Errorf("Update %s -> %s changed the record: %+v", m[0], m[1], r)
		}
	}
}

// Only compute-init begins a lifecycle, and a failure recorded by an actor the table does
// not know is an error, never a silent no-op.
func TestLifecycleActorChecks(t *testing.T) {
	s := at(t, Failed)
	for _, a := range []Actor{ActorAPI, ActorConfigure, ActorStopHook, ActorMonitor, ""} {
		var ae *ActorError
		name := string(a)
		if a == "" {
			name = "an unnamed actor"
		}
		if _, _, err := s.BeginLifecycle(a, nil); !errors.As(err, &ae) || err.Error() != name+" may not begin a lifecycle" {
			t.Errorf("BeginLifecycle(%q): %v, want an ActorError", a, err)
		}
	}
	if _, reset, err := s.BeginLifecycle(ActorInit, nil); err != nil || !reset {
		t.Fatalf("BeginLifecycle(compute-init): reset %v, %v", reset, err)
	}
	if _, err := s.BeginInit(nil); err != nil {
		t.Fatal(err)
	}
	for _, a := range []Actor{"", "someone", ActorMonitor} {
		if _, failed, err := s.Fail(a, "boom"); err == nil || failed {
			t.Errorf("Fail by %q: failed %v, err %v; want an error", a, failed, err)
		}
	}
	if r, _ := s.Load(); r.Status != Init {
		t.Errorf("status %s after refused failures, want init", r.Status)
	}
}

// TestEndedFromAndHasRun: a move into failed or terminated records the status it left,
// any other move clears it; reaching running marks the lifecycle as having run.
func TestEndedFromAndHasRun(t *testing.T) {
	s := at(t, Init)
	r, _, err := s.Fail(ActorInit, "boom")
	if err != nil || r.EndedFrom != Init || r.HasRun {
		t.Fatalf("failed start: %+v %v", r, err)
	}

	s = at(t, Init)
	if r, err = s.MarkRunning(nil); err != nil || !r.HasRun || r.EndedFrom != "" {
		t.Fatalf("MarkRunning: %+v %v", r, err)
	}
	if _, _, err := s.BeginTermination(true); err != nil {
		t.Fatal(err)
	}
	r, done, err := s.CompleteTermination(ActorAPI, nil)
	if err != nil || !done || r.EndedFrom != TerminationPendingImmediate || !r.HasRun {
		t.Fatalf("terminated: %+v %v %v", r, done, err)
	}

	// A failed compute that is reconfigured leaves its ended state behind.
	s = at(t, Running)
	if r, _, err = s.Fail(ActorStopHook, "postgres died"); err != nil || r.EndedFrom != Running {
		t.Fatalf("failed while running: %+v %v", r, err)
	}
	if _, r, err = s.AcceptConfig([]Status{Failed}, nil); err != nil || r.EndedFrom != "" {
		t.Fatalf("reconfigured: %+v %v", r, err)
	}
}
