package lfc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// clock is a controllable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const interval = 300 * time.Second

// events of the interleaving test: API calls, the periodic tick, and the ends of running
// operations.
var events = []string{
	"prewarm", "prewarm-ok", "prewarm-fail", "prewarm-404", "cancel",
	"tick", "half-tick", "offload", "offload-ok", "offload-fail", "offload-empty",
}

// model is what the rules say, kept independently of Machine.
type model struct {
	prewarmRunning, offloadRunning, cancelRequested bool
	// prewarmDuringOffload: a prewarm was taken while the running offload ran (the
	// offload may have read an incomplete LFC state: Core must not upload it).
	prewarmDuringOffload bool
	prewarm              lfcstate.PrewarmStatus
	now, next            time.Duration // since the start
	offload              lfcstate.OffloadStatus
	counters             lfcstate.Counters
}

// TestEveryInterleaving replays every sequence of five events (a running prewarm, the
// periodic tick (due, or half an interval later, not yet due), API calls, the ends of the
// operations) on the controllable clock and checks each answer, each state, the counters
// and the announcements against the rules. Among them: an offload taken, then a prewarm
// accepted (POST /lfc/prewarm does not wait for offloads), then the offload's end: after
// every step Machine.PrewarmStartedDuring must say whether the running offload was
// overtaken, and an offload whose upload would have succeeded ends as Core ends it then
// (failed, ErrPrewarmDuringOffload, nothing uploaded).
func TestEveryInterleaving(t *testing.T) {
	const depth = 5
	seq := make([]int, depth)
	var n int
	var rec func(i int)
	rec = func(i int) {
		if i == depth {
			n++
			if err := replay(seq); err != nil {
				names := make([]string, len(seq))
				for k, e := range seq {
					names[k] = events[e]
				}
				t.Fatalf("%s: %v", strings.Join(names, " "), err)
			}
			return
		}
		for e := range events {
			seq[i] = e
			rec(i + 1)
		}
	}
	rec(0)
	if want := 161051; n != want {
		t.Fatalf("replayed %d sequences, want %d", n, want)
	}
}

func replay(seq []int) error {
	clk := newClock()
	start := clk.Now()
	var lastSeq uint64
	var announced int
	m := NewMachine(MachineOptions{Now: clk.Now, OffloadInterval: interval, OnChange: func(s Snapshot) {
		announced++
		lastSeq = s.Seq
	}})
	var md model
	md.prewarm, md.offload = lfcstate.PrewarmNotPrewarmed, lfcstate.OffloadNotOffloaded
	md.next = interval
	var prun *PrewarmRun
	var orun *OffloadRun
	changes := 0
	for step, e := range seq {
		switch events[e] {
		case "prewarm":
			r, err := m.StartPrewarm(context.Background())
			if md.prewarmRunning {
				if !errors.Is(err, ErrPrewarmRunning) || r != nil {
					return fmt.Errorf("step %d: second prewarm: %v, want ErrPrewarmRunning", step, err)
				}
				break
			}
			if err != nil {
				return fmt.Errorf("step %d: prewarm refused: %v", step, err)
			}
			prun = r
			md.prewarmRunning, md.cancelRequested, md.prewarm = true, false, lfcstate.PrewarmPrewarming
			if md.offloadRunning {
				md.prewarmDuringOffload = true
			}
			md.counters.Prewarms++
			changes++
		case "prewarm-ok", "prewarm-fail", "prewarm-404":
			if !md.prewarmRunning {
				m.FinishPrewarm(prun, lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted}) // stale or nil: ignored
				break
			}
			var res lfcstate.PrewarmState
			switch events[e] {
			case "prewarm-ok":
				res = lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted, Progress: lfcstate.Progress{Total: 3, Prewarmed: 2, Skipped: 1}}
			case "prewarm-fail":
				res = lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "boom"}
				if md.cancelRequested {
					res.Error = context.Canceled.Error()
				}
			default:
				res = lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}
			}
			if md.cancelRequested && prun.Context().Err() == nil {
				return fmt.Errorf("step %d: cancelled run's context not done", step)
			}
			m.FinishPrewarm(prun, res)
			if prun.Context().Err() == nil {
				return fmt.Errorf("step %d: finished run's context not done", step)
			}
			md.prewarmRunning = false
			switch {
			case md.cancelRequested && res.Status != lfcstate.PrewarmCompleted:
				md.prewarm = lfcstate.PrewarmCancelled
			default:
				md.prewarm = res.Status
				if res.Status == lfcstate.PrewarmFailed {
					md.counters.PrewarmErrors++
				}
			}
			changes++
		case "cancel":
			got := m.CancelPrewarm()
			if got != md.prewarmRunning {
				return fmt.Errorf("step %d: CancelPrewarm = %v with a prewarm running = %v", step, got, md.prewarmRunning)
			}
			if md.prewarmRunning {
				md.cancelRequested = true
			}
		case "tick", "half-tick":
			d := interval
			if events[e] == "half-tick" {
				d = interval / 2
			}
			clk.Advance(d)
			md.now += d
			due := md.now >= md.next
			for md.now >= md.next {
				md.next += interval
			}
			r, why := m.StartPeriodicOffload()
			if !due {
				if r != nil || why != "not due" {
					return fmt.Errorf("step %d: tick before its time: %v %q", step, r != nil, why)
				}
				break
			}
			allowed := !md.offloadRunning && (md.prewarm == lfcstate.PrewarmCompleted || md.prewarm == lfcstate.PrewarmNotPrewarmed || md.prewarm == lfcstate.PrewarmSkipped)
			if allowed != (r != nil) {
				return fmt.Errorf("step %d: periodic offload started = %v (%q) with prewarm %s, offload running %v",
					step, r != nil, why, md.prewarm, md.offloadRunning)
			}
			if r != nil {
				if !r.Periodic {
					return fmt.Errorf("step %d: periodic run not marked periodic", step)
				}
				orun = r
				md.offloadRunning, md.offload, md.prewarmDuringOffload = true, lfcstate.OffloadOffloading, false
				md.counters.Offloads++
				changes++
			} else if why == "" || why == "not due" {
				return fmt.Errorf("step %d: refused periodic offload says %q", step, why)
			}
		case "offload":
			r, err := m.StartOffload()
			switch {
			case md.offloadRunning:
				if !errors.Is(err, ErrOffloadRunning) {
					return fmt.Errorf("step %d: offload while one runs: %v", step, err)
				}
			case md.prewarmRunning:
				if !errors.Is(err, ErrPrewarmInProgress) {
					return fmt.Errorf("step %d: offload while a prewarm runs: %v", step, err)
				}
			default:
				if err != nil {
					return fmt.Errorf("step %d: offload refused with prewarm %s: %v", step, md.prewarm, err)
				}
				if r.Periodic {
					return fmt.Errorf("step %d: manual run marked periodic", step)
				}
				orun = r
				md.offloadRunning, md.offload, md.prewarmDuringOffload = true, lfcstate.OffloadOffloading, false
				md.counters.Offloads++
				changes++
			}
			if err != nil && r != nil {
				return fmt.Errorf("step %d: a run with an error", step)
			}
		case "offload-ok", "offload-fail", "offload-empty":
			if !md.offloadRunning {
				m.FinishOffload(orun, lfcstate.OffloadState{Status: lfcstate.OffloadCompleted}) // stale or nil: ignored
				break
			}
			res := map[string]lfcstate.OffloadState{
				"offload-ok":    {Status: lfcstate.OffloadCompleted, Timings: lfcstate.OffloadTimings{StateQueryMs: 1}},
				"offload-fail":  {Status: lfcstate.OffloadFailed, Error: "boom"},
				"offload-empty": {Status: lfcstate.OffloadSkipped},
			}[events[e]]
			// What Core does before the upload: an offload overtaken by a prewarm
			// uploads nothing and ends failed.
			// (The model decides; the check after each step holds the machine to it.)
			if md.prewarmDuringOffload && res.Status == lfcstate.OffloadCompleted {
				res = lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: ErrPrewarmDuringOffload.Error()}
			}
			m.FinishOffload(orun, res)
			md.offloadRunning, md.offload = false, res.Status
			if res.Status == lfcstate.OffloadFailed {
				md.counters.OffloadErrors++
			}
			changes++
		}
		if md.offloadRunning && m.PrewarmStartedDuring(orun) != md.prewarmDuringOffload {
			return fmt.Errorf("step %d: PrewarmStartedDuring = %v, want %v", step, !md.prewarmDuringOffload, md.prewarmDuringOffload)
		}
		s := m.Snapshot()
		if s.Prewarm.Status != md.prewarm || s.Offload.Status != md.offload {
			return fmt.Errorf("step %d: state %s/%s, want %s/%s", step, s.Prewarm.Status, s.Offload.Status, md.prewarm, md.offload)
		}
		if got := m.NextPeriodicOffload(); !got.Equal(start.Add(md.next)) {
			return fmt.Errorf("step %d: next tick at %v, want %v", step, got.Sub(start), md.next)
		}
		if s.Counters != md.counters {
			return fmt.Errorf("step %d: counters %+v, want %+v", step, s.Counters, md.counters)
		}
		if s.Seq != uint64(changes) || announced != changes || lastSeq != s.Seq {
			return fmt.Errorf("step %d: seq %d, %d announcements (last %d), want %d", step, s.Seq, announced, lastSeq, changes)
		}
		if _, err := json.Marshal(s.Prewarm); err != nil {
			return fmt.Errorf("step %d: %v", step, err)
		}
		if _, err := json.Marshal(s.Offload); err != nil {
			return fmt.Errorf("step %d: %v", step, err)
		}
	}
	return nil
}

// The rule that matters most, spelled out: never an offload tick during a prewarm or after
// a failed one, but a manual offload after a failed one.
func TestPeriodicOffloadNeverOffloadsAnIncompleteState(t *testing.T) {
	clk := newClock()
	m := NewMachine(MachineOptions{Now: clk.Now, OffloadInterval: interval})
	run, err := m.StartPrewarm(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(interval)
	if m.PeriodicOffloadDue() {
		t.Error("due during a prewarm")
	}
	if r, why := m.StartPeriodicOffload(); r != nil || why != "a prewarm is in progress" {
		t.Errorf("tick during a prewarm: %v %q", r, why)
	}
	if _, err := m.StartOffload(); !errors.Is(err, ErrPrewarmInProgress) {
		t.Errorf("manual offload during a prewarm: %v", err)
	}
	m.FinishPrewarm(run, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "boom"})
	clk.Advance(interval)
	if m.PeriodicOffloadDue() {
		t.Error("due after a failed prewarm")
	}
	if r, why := m.StartPeriodicOffload(); r != nil || why != "the last prewarm ended failed" {
		t.Errorf("tick after a failed prewarm: %v %q", r, why)
	}
	r, err := m.StartOffload()
	if err != nil {
		t.Fatalf("manual offload after a failed prewarm: %v", err)
	}
	m.FinishOffload(r, lfcstate.OffloadState{Status: lfcstate.OffloadCompleted})
	if got := m.Counters(); got != (lfcstate.Counters{Prewarms: 1, PrewarmErrors: 1, Offloads: 1}) {
		t.Errorf("counters %+v", got)
	}
}

// The order the interleaving test also covers, spelled out: an offload taken, a prewarm
// accepted while it runs, then the offload about to read or upload the LFC state. The
// machine says the offload was overtaken (Core then uploads nothing), even once that
// prewarm has ended; the next offload starts clean.
func TestPrewarmDuringOffload(t *testing.T) {
	for _, periodic := range []bool{false, true} {
		clk := newClock()
		m := NewMachine(MachineOptions{Now: clk.Now, OffloadInterval: interval})
		var o *OffloadRun
		if periodic {
			clk.Advance(interval)
			o, _ = m.StartPeriodicOffload()
		} else {
			o, _ = m.StartOffload()
		}
		if o == nil || m.PrewarmStartedDuring(o) {
			t.Fatalf("periodic %v: offload %v, overtaken before any prewarm", periodic, o)
		}
		p, err := m.StartPrewarm(context.Background())
		if err != nil {
			t.Fatalf("prewarm during an offload refused: %v", err)
		}
		if !m.PrewarmStartedDuring(o) {
			t.Errorf("periodic %v: the offload is not overtaken by the prewarm", periodic)
		}
		m.FinishPrewarm(p, lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted})
		if !m.PrewarmStartedDuring(o) {
			t.Errorf("periodic %v: the overtaken offload is forgotten once the prewarm ends", periodic)
		}
		m.FinishOffload(o, lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: ErrPrewarmDuringOffload.Error()})
		if c := m.Counters(); c.OffloadErrors != 1 {
			t.Errorf("counters %+v", c)
		}
		o2, err := m.StartOffload()
		if err != nil || m.PrewarmStartedDuring(o2) {
			t.Errorf("next offload: %v, overtaken %v", err, m.PrewarmStartedDuring(o2))
		}
	}
	if (&Machine{}).PrewarmStartedDuring(nil) {
		t.Error("a nil run is overtaken")
	}
}

func TestPeriodicSchedule(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	m := NewMachine(MachineOptions{Now: clk.Now, OffloadInterval: interval})
	if got := m.NextPeriodicOffload(); !got.Equal(start.Add(interval)) {
		t.Fatalf("first tick at %v, want one interval after start", got)
	}
	clk.Advance(interval - time.Second)
	if m.PeriodicOffloadDue() {
		t.Error("due before the first interval")
	}
	if r, why := m.StartPeriodicOffload(); r != nil || why != "not due" {
		t.Errorf("early tick: %v %q", r, why)
	}
	clk.Advance(time.Second)
	if !m.PeriodicOffloadDue() {
		t.Error("not due after one interval")
	}
	r, _ := m.StartPeriodicOffload()
	if r == nil {
		t.Fatal("no offload at the first tick")
	}
	// While it runs, the next tick is refused and still moves the schedule on; missed
	// ticks are not made up.
	clk.Advance(3*interval + time.Second)
	if m.PeriodicOffloadDue() {
		t.Error("due while an offload runs")
	}
	if r2, why := m.StartPeriodicOffload(); r2 != nil || why != "an offload is running" {
		t.Errorf("tick during an offload: %v %q", r2, why)
	}
	if got, want := m.NextPeriodicOffload(), start.Add(5*interval); !got.Equal(want) {
		t.Errorf("next tick %v, want %v", got, want)
	}
	m.FinishOffload(r, lfcstate.OffloadState{Status: lfcstate.OffloadSkipped})
	if r3, why := m.StartPeriodicOffload(); r3 != nil || why != "not due" {
		t.Errorf("missed tick made up: %v %q", r3, why)
	}
	if m.Offload().Status != lfcstate.OffloadSkipped || m.Counters().OffloadErrors != 0 {
		t.Errorf("skipped offload: %+v %+v", m.Offload(), m.Counters())
	}

	off := NewMachine(MachineOptions{Now: clk.Now})
	clk.Advance(100 * interval)
	if off.PeriodicOffloadDue() || !off.NextPeriodicOffload().IsZero() {
		t.Error("periodic offload without an interval")
	}
	if r, why := off.StartPeriodicOffload(); r != nil || why != "no periodic offload configured" {
		t.Errorf("tick without an interval: %v %q", r, why)
	}
}

func TestCancelPrewarm(t *testing.T) {
	m := NewMachine(MachineOptions{})
	if m.CancelPrewarm() {
		t.Error("cancel with nothing running said true")
	}
	// Nothing was left cancelled for the next prewarm (Neon's token would be).
	run, err := m.StartPrewarm(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if run.Context().Err() != nil {
		t.Fatal("a fresh prewarm starts cancelled")
	}
	if !m.CancelPrewarm() {
		t.Fatal("cancel of a running prewarm said false")
	}
	if m.Prewarm().Status != lfcstate.PrewarmPrewarming {
		t.Error("cancelled before the run ended")
	}
	if _, err := m.StartPrewarm(context.Background()); !errors.Is(err, ErrPrewarmRunning) {
		t.Errorf("a second prewarm overlaps the cancelled one: %v", err)
	}
	m.FinishPrewarm(run, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "context canceled"})
	if got := m.Prewarm(); got.Status != lfcstate.PrewarmCancelled || got.Error != "" {
		t.Errorf("state %+v, want cancelled", got)
	}
	if m.Counters().PrewarmErrors != 0 {
		t.Error("a cancel counted as an error")
	}
	// A stale finish of the old run changes nothing.
	run2, err := m.StartPrewarm(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.FinishPrewarm(run, lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted})
	if m.Prewarm().Status != lfcstate.PrewarmPrewarming {
		t.Error("a stale run finished the new one")
	}
	// A cancel that came too late for a completed query: completed.
	m.CancelPrewarm()
	m.FinishPrewarm(run2, lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted})
	if m.Prewarm().Status != lfcstate.PrewarmCompleted {
		t.Errorf("late cancel: %s", m.Prewarm().Status)
	}
	// A parent context ending (shutdown) is a failure, not a cancel.
	ctx, cancel := context.WithCancel(context.Background())
	run3, _ := m.StartPrewarm(ctx)
	cancel()
	m.FinishPrewarm(run3, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "context canceled"})
	if m.Prewarm().Status != lfcstate.PrewarmFailed {
		t.Errorf("shutdown: %s", m.Prewarm().Status)
	}
}

// A result in a state that is not an end state is recorded as failed.
func TestFinishWithANonFinalState(t *testing.T) {
	m := NewMachine(MachineOptions{})
	run, _ := m.StartPrewarm(context.Background())
	m.FinishPrewarm(run, lfcstate.PrewarmState{Status: lfcstate.PrewarmPrewarming})
	if got := m.Prewarm(); got.Status != lfcstate.PrewarmFailed || got.Error != "prewarm ended in state prewarming" {
		t.Errorf("prewarm %+v", got)
	}
	orun, _ := m.StartOffload()
	m.FinishOffload(orun, lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded})
	if got := m.Offload(); got.Status != lfcstate.OffloadFailed || got.Error != "offload ended in state not_offloaded" {
		t.Errorf("offload %+v", got)
	}
	if got := m.Counters(); got.PrewarmErrors != 1 || got.OffloadErrors != 1 {
		t.Errorf("counters %+v", got)
	}
}

func TestMs(t *testing.T) {
	for d, want := range map[time.Duration]uint32{
		-time.Second:            0,
		1500 * time.Microsecond: 1,
		3 * time.Second:         3000,
		time.Duration(1 << 62):  ^uint32(0),
	} {
		if got := ms(d); got != want {
			t.Errorf("ms(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestRestore(t *testing.T) {
	clk := newClock()
	prev := Snapshot{Seq: 41,
		Prewarm:  lfcstate.PrewarmState{Status: lfcstate.PrewarmPrewarming},
		Offload:  lfcstate.OffloadState{Status: lfcstate.OffloadOffloading},
		Counters: lfcstate.Counters{Prewarms: 3, PrewarmErrors: 1, Offloads: 7, OffloadErrors: 2}}
	var got []Snapshot
	m := NewMachine(MachineOptions{Now: clk.Now, OffloadInterval: interval, Restore: &prev, OnChange: func(s Snapshot) { got = append(got, s) }})
	s := m.Snapshot()
	want := Snapshot{Seq: 42,
		Prewarm:  lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: Interrupted},
		Offload:  lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: Interrupted},
		Counters: lfcstate.Counters{Prewarms: 3, PrewarmErrors: 2, Offloads: 7, OffloadErrors: 3}}
	if s != want {
		t.Fatalf("restored %+v\nwant %+v", s, want)
	}
	// No periodic offload after the interrupted prewarm; nothing runs, so both may start.
	clk.Advance(interval)
	if r, why := m.StartPeriodicOffload(); r != nil || why != "the last prewarm ended failed" {
		t.Errorf("tick after an interrupted prewarm: %q", why)
	}
	if _, err := m.StartPrewarm(context.Background()); err != nil {
		t.Errorf("prewarm after restore: %v", err)
	}
	// The restore's own change is announced (from NewMachine), then the prewarm.
	if len(got) != 2 || got[0] != want || got[1].Seq != 43 {
		t.Errorf("announcements %+v, want the restored snapshot (seq 42), then seq 43", got)
	}
	// Finished states: nothing changes, Seq carries on unannounced.
	var got2 []Snapshot
	record := func(s Snapshot) { got2 = append(got2, s) }
	done := Snapshot{Seq: 7, Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted, Progress: lfcstate.Progress{Total: 1, Prewarmed: 1}}, Offload: lfcstate.OffloadState{Status: lfcstate.OffloadSkipped}}
	if s := NewMachine(MachineOptions{Restore: &done, OnChange: record}).Snapshot(); s != done {
		t.Errorf("restored %+v, want %+v", s, done)
	}
	if len(got2) != 0 {
		t.Errorf("announcements %+v for a restore that changed nothing", got2)
	}
	// Garbage is replaced: a change, announced.
	bogus := done
	bogus.Offload.Status = "bogus"
	m2 := NewMachine(MachineOptions{Restore: &bogus, OnChange: record})
	if s := m2.Snapshot(); s.Seq != 8 || s.Prewarm != done.Prewarm || s.Offload.Status != lfcstate.OffloadNotOffloaded {
		t.Errorf("restored %+v", s)
	}
	if len(got2) != 1 || got2[0] != m2.Snapshot() {
		t.Errorf("announcements %+v, want the restored snapshot", got2)
	}
	// An unknown prewarm status is not known to be complete: failed, no periodic offload.
	odd := done
	odd.Prewarm.Status = "paused"
	m4 := NewMachine(MachineOptions{Restore: &odd, OffloadInterval: time.Minute})
	if s := m4.Snapshot(); s.Prewarm.Status != lfcstate.PrewarmFailed || !strings.Contains(s.Prewarm.Error, `"paused"`) {
		t.Errorf("restored an unknown prewarm status as %+v", s.Prewarm)
	}
	m3 := NewMachine(MachineOptions{Restore: &Snapshot{}})
	if s := m3.Snapshot(); s.Prewarm.Status != lfcstate.PrewarmNotPrewarmed || s.Offload.Status != lfcstate.OffloadNotOffloaded {
		t.Errorf("restored from zero %+v", s)
	}
}

// A snapshot survives a JSON round trip (the form a state record keeps).
func TestSnapshotJSON(t *testing.T) {
	s := Snapshot{Seq: 9,
		Prewarm:  lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted, Progress: lfcstate.Progress{Total: 4, Prewarmed: 3, Skipped: 1}, Timings: lfcstate.PrewarmTimings{StateDownloadMs: 1, UncompressMs: 2, PrewarmMs: 3}},
		Offload:  lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "boom"},
		Counters: lfcstate.Counters{Prewarms: 1, PrewarmErrors: 2, Offloads: 3, OffloadErrors: 4}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip of %s gave %+v", b, back)
	}
	if !strings.Contains(string(b), `"compute_ctl_lfc_offload_errors_total":4`) {
		t.Errorf("counter names: %s", b)
	}
}
