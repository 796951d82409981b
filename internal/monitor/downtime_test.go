package monitor

import (
	"testing"
	"time"
)

// The figures of the reference for a run of rounds every 500 ms: up, down three rounds,
// up again, down once.
func TestDowntime(t *testing.T) {
	d := NewDowntime(t0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	steps := []struct {
		ok             bool
		at             int // ms after t0
		current, total int64
		sinceUp        int64
	}{
		{true, 10, 0, 0, 10},
		{true, 510, 0, 0, 500},
		{false, 1010, 500, 500, 500},
		{false, 1510, 1000, 1000, 1000},
		{false, 2010, 1500, 1500, 1500},
		{true, 2510, 0, 1500, 2000},
		{false, 3010, 500, 2000, 500},
		{true, 3510, 0, 2000, 1000},
	}
	for _, s := range steps {
		since := d.Round(s.ok, ms(s.at))
		if d.CurrentMs() != s.current || d.TotalMs() != s.total || since.Milliseconds() != s.sinceUp {
			t.Errorf("at %d ms ok=%v: current %d total %d sinceUp %v; want %d %d %d", s.at, s.ok,
				d.CurrentMs(), d.TotalMs(), since, s.current, s.total, s.sinceUp)
		}
	}
}

// Postgres down from the first round on counts from the start.
func TestDowntimeFromStart(t *testing.T) {
	d := NewDowntime(t0)
	d.Round(false, t0.Add(700*time.Millisecond))
	if d.CurrentMs() != 700 || d.TotalMs() != 700 {
		t.Errorf("current %d total %d, want 700 700", d.CurrentMs(), d.TotalMs())
	}
}

// A clock that steps back adds nothing negative.
func TestDowntimeClockBack(t *testing.T) {
	d := NewDowntime(t0)
	d.Round(false, t0.Add(-time.Second))
	if d.CurrentMs() != 0 || d.TotalMs() != 0 {
		t.Errorf("current %d total %d, want 0 0", d.CurrentMs(), d.TotalMs())
	}
}

// The total adds durations and truncates when read: three failures of 0.6 ms each are
// 1 ms (the reference, which truncates each increment, would say 0).
func TestDowntimeSubMillisecond(t *testing.T) {
	d := NewDowntime(t0)
	for i := 1; i <= 3; i++ {
		d.Round(false, t0.Add(time.Duration(i)*600*time.Microsecond))
	}
	if d.TotalMs() != 1 {
		t.Errorf("total %d, want 1", d.TotalMs())
	}
}

func TestResumeDowntime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := ResumeDowntime(t0, 3*time.Second)
	if got := d.CurrentMs(); got != 3000 {
		t.Fatalf("current at resume = %d, want 3000", got)
	}
	d.Round(false, t0.Add(time.Second))
	if got, tot := d.CurrentMs(), d.TotalMs(); got != 4000 || tot != 1000 {
		t.Fatalf("after a failed round: current %d total %d, want 4000 1000", got, tot)
	}
	if out := d.Round(true, t0.Add(2*time.Second)); out != 5*time.Second || d.CurrentMs() != 0 {
		t.Fatalf("recovery: outage %s current %d", out, d.CurrentMs())
	}
	if d := ResumeDowntime(t0, 0); d.CurrentMs() != 0 {
		t.Fatal("no outage to resume")
	}
}

func TestResumeOutage(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	since := t0.Add(-11 * time.Second)
	d := ResumeOutage(t0, since)
	if got := d.CurrentMs(); got != 11000 || !d.Down() {
		t.Fatalf("at resume: current %d down %v, want 11000 true", got, d.Down())
	}
	if s, down := d.DownSince(); !down || !s.Equal(since) {
		t.Fatalf("DownSince %v %v", s, down)
	}
	d.Round(false, t0.Add(time.Second))
	if got, tot := d.CurrentMs(), d.TotalMs(); got != 12000 || tot != 1000 {
		t.Fatalf("after a failed round: current %d total %d, want 12000 1000", got, tot)
	}
	if out := d.Round(true, t0.Add(2*time.Second)); out != 13*time.Second || d.Down() {
		t.Fatalf("recovery: outage %s down %v", out, d.Down())
	}
	if _, down := d.DownSince(); down {
		t.Fatal("DownSince after recovery")
	}
	// The clock went back past the outage's start: an outage of 0, still down.
	if d := ResumeOutage(t0, t0.Add(time.Minute)); d.CurrentMs() != 0 || !d.Down() {
		t.Fatalf("since after now: current %d down %v", d.CurrentMs(), d.Down())
	}
	if NewDowntime(t0).Down() {
		t.Fatal("a new Downtime is down")
	}
}
