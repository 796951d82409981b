package monitor

import (
	"testing"
	"time"
)

func TestTrackerMovesForwardOnly(t *testing.T) {
	tr := NewTracker(time.Time{}, 0)
	if _, ok := tr.Value(); ok {
		t.Fatal("a fresh tracker has a value")
	}
	if tr.Observe(time.Time{}) {
		t.Error("zero moved it")
	}
	if !tr.Observe(t0) {
		t.Error("first value did not move it")
	}
	if tr.Observe(t0) || tr.Observe(t0.Add(-time.Second)) {
		t.Error("same or older value moved it")
	}
	if !tr.Observe(t0.Add(time.Millisecond)) {
		t.Error("newer value did not move it")
	}
	if v, ok := tr.Value(); !ok || !v.Equal(t0.Add(time.Millisecond)) {
		t.Errorf("value %v %v", v, ok)
	}
}

func TestTrackerSeed(t *testing.T) {
	tr := NewTracker(t0, time.Second)
	if v, ok := tr.Value(); !ok || !v.Equal(t0) {
		t.Fatalf("seed: %v %v", v, ok)
	}
	if _, due := tr.Due(t0.Add(time.Hour)); due {
		t.Error("the seed is already published")
	}
	if tr.Observe(t0.Add(-time.Minute)) {
		t.Error("an older sample (a restarted monitor) moved the seed back")
	}
	if _, pending := tr.Pending(); pending {
		t.Error("pending without a move")
	}
}

func TestTrackerPublication(t *testing.T) {
	tr := NewTracker(time.Time{}, time.Second)
	clock := t0
	due := func(want bool, wantV time.Time) {
		t.Helper()
		v, ok := tr.Due(clock)
		if ok != want || (ok && !v.Equal(wantV)) {
			t.Fatalf("at +%v: Due = %v, %v; want %v, %v", clock.Sub(t0), v, ok, wantV, want)
		}
	}
	due(false, time.Time{}) // nothing yet
	tr.Observe(t0)
	due(true, t0) // the first publication is due at once
	tr.Published(t0, clock)
	due(false, time.Time{})

	// A busy compute: the value moves every 500 ms; publications at most once per second.
	writes := 0
	for i := 1; i <= 10; i++ {
		clock = t0.Add(time.Duration(i) * 500 * time.Millisecond)
		tr.Observe(clock)
		if v, ok := tr.Due(clock); ok {
			if !v.Equal(clock) {
				t.Fatalf("due value %v, want the newest %v", v, clock)
			}
			tr.Published(v, clock)
			writes++
		}
	}
	if writes != 5 {
		t.Errorf("%d writes in 5 s at one move per 500 ms, want 5", writes)
	}

	// A failed write is not marked: due again at the next look.
	clock = clock.Add(2 * time.Second)
	tr.Observe(clock)
	due(true, clock)
	due(true, clock)
	tr.Published(clock, clock)

	// A move just after a publication waits for the interval, then is due.
	tr.Observe(clock.Add(10 * time.Millisecond))
	clock = clock.Add(999 * time.Millisecond)
	due(false, time.Time{})
	if v, ok := tr.Pending(); !ok || !v.Equal(clock.Add(-989*time.Millisecond)) {
		t.Errorf("Pending = %v, %v", v, ok)
	}
	clock = clock.Add(time.Millisecond)
	due(true, clock.Add(-990*time.Millisecond))
}

// Published with an older value than one already published keeps the newer mark.
func TestTrackerPublishedOlder(t *testing.T) {
	tr := NewTracker(time.Time{}, time.Second)
	tr.Observe(t0.Add(time.Second))
	tr.Published(t0.Add(time.Second), t0)
	tr.Published(t0, t0.Add(5*time.Second))
	if _, ok := tr.Pending(); ok {
		t.Error("an older publication made the value pending again")
	}
}
