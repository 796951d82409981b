package monitor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeSource answers from its fields and records which queries ran.
type fakeSource struct {
	stats                      DatabaseStats
	backs                      []Backend
	walsenders, subs, autovac  int64
	errStats, errBacks, errWal error
	errSubs, errAutovac        error
	calls                      []string
}

func (f *fakeSource) DatabaseStats(context.Context) (DatabaseStats, error) {
	f.calls = append(f.calls, "stats")
	return f.stats, f.errStats
}
func (f *fakeSource) Backends(context.Context) ([]Backend, error) {
	f.calls = append(f.calls, "backends")
	return f.backs, f.errBacks
}
func (f *fakeSource) Walsenders(context.Context) (int64, error) {
	f.calls = append(f.calls, "walsenders")
	return f.walsenders, f.errWal
}
func (f *fakeSource) Subscriptions(context.Context) (int64, error) {
	f.calls = append(f.calls, "subscriptions")
	return f.subs, f.errSubs
}
func (f *fakeSource) AutovacuumWorkers(context.Context) (int64, error) {
	f.calls = append(f.calls, "autovacuum")
	return f.autovac, f.errAutovac
}

// fakeNow is a clock the test moves.
type fakeNow struct{ t time.Time }

func (f *fakeNow) Now() time.Time { return f.t }

func TestSampleRulesInOrder(t *testing.T) {
	idleAt := t0.Add(-time.Minute)
	tests := []struct {
		name   string
		src    fakeSource
		delta  bool
		reason Reason
		calls  string
		last   time.Time // zero: now
	}{
		{"nothing", fakeSource{}, false, ReasonNone, "backends walsenders subscriptions autovacuum", time.Time{}},
		{"nothing, with stats (first sample records)", fakeSource{stats: DatabaseStats{1, 1}}, true, ReasonNone, "stats backends walsenders subscriptions autovacuum", time.Time{}},
		{"active backend stops", fakeSource{backs: []Backend{{State: ptr("active")}}, walsenders: 1}, false, ReasonBackendActive, "backends", t0},
		{"idle backend stops", fakeSource{backs: []Backend{{State: ptr("idle"), StateChange: &idleAt}}, walsenders: 1}, false, ReasonBackendIdle, "backends", idleAt},
		{"walsender", fakeSource{walsenders: 2, subs: 1}, false, ReasonWalsender, "backends walsenders", t0},
		{"subscription", fakeSource{subs: 1, autovac: 1}, false, ReasonSubscription, "backends walsenders subscriptions", t0},
		{"autovacuum", fakeSource{autovac: 1}, false, ReasonAutovacuum, "backends walsenders subscriptions autovacuum", t0},
	}
	for _, tc := range tests {
		clock := &fakeNow{t0}
		s := &Sampler{StatsDelta: tc.delta, Now: clock.Now}
		src := tc.src
		got, err := s.Sample(context.Background(), &src)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.Reason != tc.reason || !got.LastActive.Equal(tc.last) || !got.At.Equal(t0) {
			t.Errorf("%s: sample %+v, want reason %q last %v", tc.name, got, tc.reason, tc.last)
		}
		if c := strings.Join(src.calls, " "); c != tc.calls {
			t.Errorf("%s: queries %q, want %q", tc.name, c, tc.calls)
		}
	}
}

func TestSampleStatsDelta(t *testing.T) {
	clock := &fakeNow{t0}
	s := &Sampler{StatsDelta: true, Now: clock.Now}
	src := &fakeSource{stats: DatabaseStats{100, 5}}
	step := func(want Reason, wantLast time.Time) {
		t.Helper()
		src.calls = nil
		got, err := s.Sample(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		if got.Reason != want || !got.LastActive.Equal(wantLast) {
			t.Fatalf("at %v: sample %+v, want %q, last %v", clock.t, got, want, wantLast)
		}
	}
	step(ReasonNone, time.Time{}) // first: only records
	clock.t = t0.Add(time.Second)
	step(ReasonNone, time.Time{}) // unchanged
	src.stats.Sessions = 6
	clock.t = t0.Add(2 * time.Second)
	step(ReasonStats, t0.Add(2*time.Second))
	if strings.Join(src.calls, " ") != "stats" {
		t.Errorf("a stats change must stop the sample, queries %q", src.calls)
	}
	clock.t = t0.Add(3 * time.Second)
	step(ReasonNone, t0.Add(2*time.Second)) // unchanged again: the value stays
	src.stats.ActiveTime = 101.25
	clock.t = t0.Add(4 * time.Second)
	step(ReasonStats, t0.Add(4*time.Second))
}

// The backends rule counts only when it is newer than the last value; otherwise the
// other rules run.
func TestSampleIdleOnlyWhenNewer(t *testing.T) {
	clock := &fakeNow{t0}
	s := &Sampler{Now: clock.Now}
	idleAt := t0.Add(-time.Minute)
	src := &fakeSource{backs: []Backend{{State: ptr("idle"), StateChange: &idleAt}}}
	got, err := s.Sample(context.Background(), src)
	if err != nil || got.Reason != ReasonBackendIdle || !got.LastActive.Equal(idleAt) {
		t.Fatalf("first: %+v, %v", got, err)
	}
	clock.t = t0.Add(time.Second)
	src.calls = nil
	got, err = s.Sample(context.Background(), src)
	if err != nil || got.Reason != ReasonNone || !got.LastActive.Equal(idleAt) {
		t.Fatalf("same state_change: %+v, %v", got, err)
	}
	if len(src.calls) != 4 {
		t.Errorf("an idle time that is not newer must fall through to the other rules, queries %q", src.calls)
	}
	// A walsender moves it to now; an older idle state_change later does not move it back.
	src.walsenders = 1
	got, _ = s.Sample(context.Background(), src)
	if got.Reason != ReasonWalsender || !got.LastActive.Equal(clock.t) {
		t.Fatalf("walsender: %+v", got)
	}
	src.walsenders = 0
	clock.t = t0.Add(2 * time.Second)
	got, _ = s.Sample(context.Background(), src)
	if got.Reason != ReasonNone || !got.LastActive.Equal(t0.Add(time.Second)) {
		t.Fatalf("after walsender: %+v", got)
	}
}

// A clock that steps back never moves the value back.
func TestSampleClockStepsBack(t *testing.T) {
	clock := &fakeNow{t0}
	s := &Sampler{Now: clock.Now}
	src := &fakeSource{autovac: 1}
	if got, _ := s.Sample(context.Background(), src); !got.LastActive.Equal(t0) {
		t.Fatalf("got %+v", got)
	}
	clock.t = t0.Add(-time.Hour)
	if got, _ := s.Sample(context.Background(), src); !got.LastActive.Equal(t0) || got.Reason != ReasonAutovacuum {
		t.Fatalf("went back: %+v", got)
	}
}

func TestSampleErrors(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		src  fakeSource
	}{
		{"stats", fakeSource{errStats: boom}},
		{"backends", fakeSource{errBacks: boom}},
		{"walsenders", fakeSource{errWal: boom}},
		{"subscriptions", fakeSource{errSubs: boom}},
		{"autovacuum", fakeSource{errAutovac: boom}},
	}
	for _, tc := range tests {
		clock := &fakeNow{t0}
		s := &Sampler{StatsDelta: true, Now: clock.Now, last: t0.Add(-time.Hour)}
		src := tc.src
		got, err := s.Sample(context.Background(), &src)
		if !errors.Is(err, boom) {
			t.Errorf("%s: err %v, want boom", tc.name, err)
		}
		if got != (Sample{}) {
			t.Errorf("%s: a failed sample must be zero, got %+v", tc.name, got)
		}
		if !s.last.Equal(t0.Add(-time.Hour)) {
			t.Errorf("%s: a failed sample moved the value to %v", tc.name, s.last)
		}
	}
}

func TestSamplerDefaultClock(t *testing.T) {
	s := &Sampler{}
	before := time.Now()
	got, err := s.Sample(context.Background(), &fakeSource{autovac: 1})
	if err != nil || got.LastActive.Before(before) || got.LastActive.After(time.Now()) {
		t.Fatalf("got %+v, %v", got, err)
	}
}
