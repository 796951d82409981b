package cgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup/cgrouptest"
	"golang.org/x/sys/unix"
)

const MiB = 1 << 20

// A memory.stat as a 6.1 kernel writes it for a service (trimmed), with
// active_anon + inactive_anon = 104857600 + 52428800 = 150 MiB.

func TestParseMemoryStat(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     uint64
		wantErr  string
	}{
		{"cgroup v2 service", cgrouptest.MemoryStat, 150 * MiB, ""},
		{"no trailing newline", "active_anon 1\ninactive_anon 2", 3, ""},
		{"keys in any order, others ignored", "inactive_anon 10\nfoo bar\nactive_anon 5\n", 15, ""},
		{"zeros", "active_anon 0\ninactive_anon 0\n", 0, ""},
		{"no inactive_anon", "active_anon 5\n", 0, "no active_anon and inactive_anon"},
		{"empty", "", 0, "no active_anon and inactive_anon"},
		{"bad number", "active_anon 5x\ninactive_anon 1\n", 0, "memory.stat: active_anon"},
		{"negative", "active_anon -5\ninactive_anon 1\n", 0, "memory.stat: active_anon"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMemoryStat([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMemoryStat = %d, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMemoryStat = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestParseMemoryEvents(t *testing.T) {
	got, err := ParseMemoryEvents([]byte("low 1\nhigh 22\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n"))
	if want := (Events{Low: 1, High: 22, Max: 3, OOM: 4, OOMKill: 5}); err != nil || got != want {
		t.Errorf("ParseMemoryEvents = %+v, %v; want %+v", got, err, want)
	}
	if got, err := ParseMemoryEvents([]byte("high 7\n")); err != nil || got != (Events{High: 7}) {
		t.Errorf("partial file = %+v, %v", got, err)
	}
	if _, err := ParseMemoryEvents([]byte("oom_kill many\n")); err == nil {
		t.Error("a bad number parsed")
	}
}

// cg is a cgroup directory made of files the test writes.
type cg struct {
	t   *testing.T
	dir string
}

func newCG(t *testing.T) cg {
	return cg{t, t.TempDir()}
}

// anon writes a memory.stat whose active_anon + inactive_anon is n bytes.
func (c cg) anon(n uint64) {
	c.t.Helper()
	c.write("memory.stat", fmt.Sprintf("anon %d\nfile 4096\ninactive_anon %d\nactive_anon %d\nactive_file 4096\n", n, n/3, n-n/3))
}

func (c cg) write(name, content string) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, name), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// logBuf collects log lines for checks (text handler, debug level).
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// fakeClock: Now is fixed; the ticker's channel is fed by the test; the periods asked
// for are recorded.
type fakeClock struct {
	now     time.Time
	ticks   chan time.Time
	mu      sync.Mutex
	periods []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.periods = append(c.periods, d)
	return c
}

func (c *fakeClock) tickerPeriods() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.periods)
}
func (c *fakeClock) C() <-chan time.Time { return c.ticks }
func (c *fakeClock) Stop()               {}

func newWatcher(t *testing.T, loc Locator) (*Watcher, *logBuf) {
	log, lb := newLog()
	return NewWatcher(loc, Options{Clock: &fakeClock{now: t0}, Log: log}), lb
}

func TestWatcherAverages(t *testing.T) {
	c := newCG(t)
	w, _ := newWatcher(t, FixedDir(c.dir))
	if s := w.Last(); !s.At.Equal(t0) || s.History.Samples != 0 {
		t.Fatalf("before any sample: %+v, want At = creation time and no samples", s)
	}
	ctx := context.Background()
	for i, tt := range []struct {
		anon    uint64
		avg     uint64
		samples int
		span    time.Duration
	}{
		{100 * MiB, 100 * MiB, 1, 0},
		{200 * MiB, 150 * MiB, 2, 100 * time.Millisecond}, // (100 + 200) / 2
		{300 * MiB, 200 * MiB, 3, 200 * time.Millisecond}, // 600 / 3
		{400 * MiB, 250 * MiB, 4, 300 * time.Millisecond}, // 1000 / 4
		{500 * MiB, 300 * MiB, 5, 400 * time.Millisecond}, // 1500 / 5
		{600 * MiB, 400 * MiB, 5, 400 * time.Millisecond}, // (200 + ... + 600) / 5: the oldest left
		// 300..600 MiB + 4 bytes = 1887436804 / 5 = 377487360.8 -> 377487360: integer
		// division rounds down, as the reference's.
		{4, 377487360, 5, 400 * time.Millisecond},
		{1 << 40, (400*MiB + 500*MiB + 600*MiB + 4 + 1<<40) / 5, 5, 400 * time.Millisecond}, // 1 TiB: no overflow
		{0, (500*MiB + 600*MiB + 4 + 1<<40) / 5, 5, 400 * time.Millisecond},
		{0, (600*MiB + 4 + 1<<40) / 5, 5, 400 * time.Millisecond},
		{0, (4 + 1<<40) / 5, 5, 400 * time.Millisecond},
		{0, 1 << 40 / 5, 5, 400 * time.Millisecond}, // 219902325555.2 -> 219902325555
		{0, 0, 5, 400 * time.Millisecond},
	} {
		c.anon(tt.anon)
		now := at(100 * i)
		w.step(ctx, now)
		s := w.Last()
		if s.History.AvgNonReclaimable != tt.avg || s.History.Samples != tt.samples || s.History.Span != tt.span || !s.At.Equal(now) || s.Dir != c.dir {
			t.Fatalf("sample %d (%d bytes): %+v at %v; want avg %d over %d samples, span %v, at %v",
				i, tt.anon, s.History, s.At, tt.avg, tt.samples, tt.span, now)
		}
	}
}

// countingLocator returns dir (or err) and counts its calls.
type countingLocator struct {
	mu    sync.Mutex
	calls int
	dir   string
	err   error
}

func (l *countingLocator) locate(context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	return l.dir, l.err
}

func (l *countingLocator) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

func TestWatcherFailuresAndRelocation(t *testing.T) {
	c := newCG(t)
	loc := &countingLocator{err: errors.New("compute-postgres.service has no control group (not running?)")}
	w, logs := newWatcher(t, loc.locate)
	ctx := context.Background()

	// The unit is not running: the lookup fails, and is retried at most once a second.
	w.step(ctx, at(0))
	w.step(ctx, at(100))
	w.step(ctx, at(900))
	if loc.n() != 1 {
		t.Fatalf("lookups within the first second = %d, want 1", loc.n())
	}
	if s := w.Last(); !s.At.Equal(t0) || s.History.Samples != 0 {
		t.Fatalf("snapshot after failed lookups = %+v, want none taken", s)
	}
	loc.mu.Lock()
	loc.dir, loc.err = c.dir, nil
	loc.mu.Unlock()
	c.anon(300 * MiB)
	w.step(ctx, at(1000))
	if loc.n() != 2 {
		t.Fatalf("lookups = %d, want 2 (a second after the first)", loc.n())
	}
	w.step(ctx, at(1100))
	if s := w.Last(); s.History.Samples != 2 || s.History.AvgNonReclaimable != 300*MiB || !s.At.Equal(at(1100)) {
		t.Fatalf("snapshot = %+v, want 2 samples of 300 MiB at 1.1 s", s)
	}
	if got := logs.count("cgroup memory stats unavailable"); got != 1 {
		t.Errorf("failure logged %d times, want once per run of failures\n%s", got, logs)
	}
	if got := logs.count("cgroup memory stats available again"); got != 1 {
		t.Errorf("recovery logged %d times, want 1\n%s", got, logs)
	}

	// The unit stops: memory.stat is gone with its directory. No sample; the snapshot
	// keeps its time (it ages) but its history is empty at once, so no decision uses the
	// dead cgroup's average; the directory is looked up again.
	if err := os.Remove(filepath.Join(c.dir, "memory.stat")); err != nil {
		t.Fatal(err)
	}
	w.step(ctx, at(1200))
	if s := w.Last(); !s.At.Equal(at(1100)) || s.History != (History{}) {
		t.Errorf("snapshot after a failed read = %+v, want the time of 1.1 s and no history", s)
	}
	w.step(ctx, at(1300)) // within a second of the last lookup (at 1 s): none
	if loc.n() != 2 {
		t.Errorf("lookups = %d, want still 2", loc.n())
	}
	// It comes back: looked up again (a second after the last lookup), and the history
	// starts again (one sample, not the old ones).
	c.anon(100 * MiB)
	w.step(ctx, at(2000))
	if loc.n() != 3 {
		t.Errorf("lookups after the directory went away = %d, want 3", loc.n())
	}
	if s := w.Last(); s.History.Samples != 1 || s.History.AvgNonReclaimable != 100*MiB || !s.At.Equal(at(2000)) {
		t.Errorf("first sample after the restart = %+v, want 1 sample of 100 MiB at 2 s", s)
	}
	if got := logs.count("cgroup memory stats unavailable"); got != 2 {
		t.Errorf("failures logged %d times, want 2 (one per run)\n%s", got, logs)
	}

	// An unreadable memory.stat (not a v2 memory controller) is a failure too.
	c.write("memory.stat", "cache 4096\n")
	w.step(ctx, at(2100))
	if s := w.Last(); !s.At.Equal(at(2000)) {
		t.Errorf("a memory.stat without anon counters made a sample: %+v", s)
	}
}

// requested reports whether an upscale request is waiting, and takes it.
func requested(w *Watcher) bool {
	select {
	case <-w.UpscaleRequests():
		return true
	default:
		return false
	}
}

func TestWatcherUpscaleRequests(t *testing.T) {
	c := newCG(t)
	w, logs := newWatcher(t, FixedDir(c.dir))
	ctx := context.Background()

	// No threshold yet (0): no requests however much is used.
	c.anon(1 << 40)
	w.step(ctx, at(0))
	if requested(w) {
		t.Fatal("a request without a threshold")
	}

	w.SetThreshold(400 * MiB)
	if w.Threshold() != 400*MiB {
		t.Fatalf("Threshold() = %d", w.Threshold())
	}
	// The 1 TiB sample is still in the average: over the threshold, a request.
	w.step(ctx, at(100))
	if !requested(w) {
		t.Fatal("no request over the threshold")
	}
	if !strings.Contains(logs.String(), "requesting upscale") {
		t.Errorf("the request was not logged:\n%s", logs)
	}
	// Still over, but less than a second since the last request: nothing.
	for ms := 200; ms < 1100; ms += 100 {
		w.step(ctx, at(ms))
		if requested(w) {
			t.Fatalf("a second request at %d ms, within a second of the first (at 100 ms)", ms)
		}
	}
	// A second after the first: the next one.
	w.step(ctx, at(1100))
	if !requested(w) {
		t.Fatal("no request a second after the first while still over the threshold")
	}

	// Nobody takes the next request (no agent connected): it waits, and only one does.
	w.step(ctx, at(2100))
	w.step(ctx, at(3100))
	if len(w.requests) != 1 {
		t.Fatalf("%d requests waiting, want 1", len(w.requests))
	}
	// The pressure passes before anyone came: the request is taken back.
	c.anon(100 * MiB)
	for ms := 3200; ms <= 3600; ms += 100 {
		w.step(ctx, at(ms)) // five samples of 100 MiB push the 1 TiB ones out
	}
	if s := w.Last(); s.History.AvgNonReclaimable != 100*MiB {
		t.Fatalf("average = %d, want 100 MiB", s.History.AvgNonReclaimable)
	}
	if requested(w) {
		t.Fatal("a request for pressure that has passed")
	}

	// Exactly at the threshold counts as over (the reference asks when avg >= threshold).
	w.SetThreshold(100 * MiB)
	w.step(ctx, at(3700))
	if !requested(w) {
		t.Fatal("no request at exactly the threshold")
	}
	// One byte under: nothing, even a second later.
	w.SetThreshold(100*MiB + 1)
	w.step(ctx, at(4700))
	if requested(w) {
		t.Fatal("a request below the threshold")
	}
}

func TestWatcherRequestInterval(t *testing.T) {
	c := newCG(t)
	log, _ := newLog()
	w := NewWatcher(FixedDir(c.dir), Options{Clock: &fakeClock{now: t0}, Log: log, MinRequestInterval: 250 * time.Millisecond})
	w.SetThreshold(MiB)
	c.anon(2 * MiB)
	var got []int
	for ms := 0; ms <= 1000; ms += 100 {
		w.step(context.Background(), at(ms))
		if requested(w) {
			got = append(got, ms)
		}
	}
	// Every 250 ms at most, on 100 ms samples: 0, 300, 600, 900.
	if fmt.Sprint(got) != "[0 300 600 900]" {
		t.Errorf("requests at %v ms, want [0 300 600 900]", got)
	}
}

func TestWatcherEvents(t *testing.T) {
	c := newCG(t)
	w, logs := newWatcher(t, FixedDir(c.dir))
	ctx := context.Background()
	c.anon(MiB)

	// Without memory.events the samples go on, with zero counters.
	w.step(ctx, at(0))
	if s := w.Last(); s.History.Samples != 1 || s.Events != (Events{}) {
		t.Fatalf("without memory.events: %+v", s)
	}
	// A missing memory.events is tried again with the next reads (once every eventsEvery
	// samples), not at every sample. The first read is the baseline: counters from before
	// are not news.
	c.write("memory.events", "low 0\nhigh 10\nmax 0\noom 0\noom_kill 2\noom_group_kill 0\n")
	first := 0
	for first < eventsEvery && w.Last().Events == (Events{}) {
		first++
		w.step(ctx, at(100*first))
	}
	if s := w.Last(); s.Events != (Events{High: 10, OOMKill: 2}) {
		t.Fatalf("events = %+v after %d samples", s.Events, first)
	}
	if first < 2 {
		t.Errorf("a missing memory.events was read again at the next sample")
	}
	if strings.Contains(logs.String(), "OOM killer") {
		t.Fatalf("the baseline was logged as an OOM kill:\n%s", logs)
	}
	// memory.events is read once every eventsEvery samples after that: not at the next
	// sample, but by the tenth.
	untilRead := func(ms int, before Events) int {
		t.Helper()
		n := 0
		for w.Last().Events == before && n < eventsEvery {
			ms += 100
			w.step(ctx, at(ms))
			n++
		}
		if n < 2 || w.Last().Events == before {
			t.Fatalf("memory.events read after %d samples (events %+v), want once every %d", n, w.Last().Events, eventsEvery)
		}
		return ms
	}
	c.write("memory.events", "low 0\nhigh 15\nmax 1\noom 1\noom_kill 3\noom_group_kill 0\n")
	ms := untilRead(100*first, Events{High: 10, OOMKill: 2})
	out := logs.String()
	for _, want := range []string{
		`level=WARN msg="processes in the cgroup were killed by the OOM killer"`, "oom_kill=3 new=1",
		`level=WARN msg="cgroup memory usage reached memory.max"`,
		`level=DEBUG msg="cgroup memory usage over memory.high (reclaim, throttling)"`, "high=15 new=5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// Smaller counters: a new cgroup (the unit restarted), a new baseline, no lines.
	before := logs.count("OOM killer")
	c.write("memory.events", "low 0\nhigh 1\nmax 0\noom 0\noom_kill 1\noom_group_kill 0\n")
	untilRead(ms, w.Last().Events)
	if logs.count("OOM killer") != before {
		t.Errorf("a reset counter was logged as news:\n%s", logs)
	}
}

func TestWatcherRun(t *testing.T) {
	c := newCG(t)
	c.anon(200 * MiB)
	clock := &fakeClock{now: t0, ticks: make(chan time.Time)}
	log, _ := newLog()
	w := NewWatcher(FixedDir(c.dir), Options{Clock: clock, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Run samples at once (at the clock's Now), then on each tick. The ticks are
	// unbuffered: once the second is taken, the first tick's sample is complete.
	clock.ticks <- at(100)
	clock.ticks <- at(200)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	s := w.Last()
	if s.History.Samples != 3 || !s.At.Equal(at(200)) || s.History.AvgNonReclaimable != 200*MiB {
		t.Errorf("after Run: %+v, want 3 samples, the last at 200 ms", s)
	}
}

// TestWatcherRunIdlesWithoutCgroup: with no cgroup to read, Run wakes only for the next
// lookup (1 s, then backing off), not every 100 ms, and each such tick is a lookup even when
// it comes a little early; once it finds one it samples every 100 ms again.
func TestWatcherRunIdlesWithoutCgroup(t *testing.T) {
	c := newCG(t)
	c.anon(200 * MiB)
	loc := &countingLocator{err: errors.New("no memory controller")}
	clock := &fakeClock{now: t0, ticks: make(chan time.Time)}
	log, _ := newLog()
	w := NewWatcher(loc.locate, Options{Clock: clock, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// The ticks are unbuffered: a tick is taken only once the previous step and the
	// period decision after it are done.
	// The ticks come a little early or late, as a real ticker's do (it keeps its phase):
	// each one paced by the lookups is a lookup all the same.
	clock.ticks <- at(1003) // second lookup fails: back off to 2 s
	clock.ticks <- at(3001) // third: 4 s (1998 ms after the second)
	clock.ticks <- at(6999) // fourth: 3998 ms after the third; 8 s
	loc.mu.Lock()
	loc.dir, loc.err = c.dir, nil
	loc.mu.Unlock()
	clock.ticks <- at(14_998) // found: sample, then every 100 ms
	clock.ticks <- at(15_098) // sample
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 100 * time.Millisecond}
	if got := clock.tickerPeriods(); !slices.Equal(got, want) {
		t.Errorf("ticker periods %v, want %v", got, want)
	}
	if s := w.Last(); s.History.Samples != 2 || !s.At.Equal(at(15_098)) {
		t.Errorf("after Run: %+v, want 2 samples, the last at 15.098 s", s)
	}
	if loc.n() != 5 {
		t.Errorf("lookups = %d, want 5", loc.n())
	}
}

type fakeResolver struct {
	cg  string
	err error
}

func (r fakeResolver) ControlGroup(_ context.Context, unit string) (string, error) {
	if unit != "compute-postgres.service" {
		return "", fmt.Errorf("asked for %s", unit)
	}
	return r.cg, r.err
}

// cgroup2Mount returns a cgroup v2 mount point of this machine, or "".
func cgroup2Mount(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// "... <mount point> <options> - cgroup2 <source> <super options>"
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return f[4]
		}
	}
	return ""
}

func TestUnitDir(t *testing.T) {
	ctx := context.Background()
	if _, err := UnitDir(fakeResolver{err: errors.New("no bus")}, "compute-postgres.service", "")(ctx); err == nil || err.Error() != "no bus" {
		t.Errorf("resolver error = %v, want it passed on", err)
	}
	_, err := UnitDir(fakeResolver{}, "compute-postgres.service", "")(ctx)
	if err == nil || err.Error() != "compute-postgres.service has no control group (not running?)" {
		t.Errorf("no control group: %v", err)
	}
	tmp := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmp, "system.slice", "compute-postgres.service"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = UnitDir(fakeResolver{cg: "/system.slice/compute-postgres.service"}, "compute-postgres.service", tmp)(ctx)
	if want := "is not on a cgroup v2 file system"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a plain directory: %v, want %q", err, want)
	}
	_, err = UnitDir(fakeResolver{cg: "/system.slice/gone.service"}, "compute-postgres.service", tmp)(ctx)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing directory: %v, want not-exist", err)
	}

	// On a real cgroup v2 mount: its root cgroup, with or without a memory controller.
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Log("no cgroup v2 mount here; the real-mount case is not checked")
		return
	}
	dir, err := UnitDir(fakeResolver{cg: "/"}, "compute-postgres.service", mnt)(ctx)
	if _, statErr := os.Stat(filepath.Join(mnt, "memory.stat")); statErr == nil {
		if err != nil || dir != mnt {
			t.Errorf("UnitDir on %s = %q, %v; want the mount", mnt, dir, err)
		}
	} else if err == nil || !strings.Contains(err.Error(), "no memory controller") {
		t.Errorf("UnitDir on %s without memory.stat = %q, %v; want no memory controller", mnt, dir, err)
	}
}

// TestRealCgroup watches a real cgroup v2 with a process in it that holds 64 MiB of
// anonymous memory. It needs root and a cgroup v2 hierarchy whose root has the memory
// controller enabled for its children (a systemd host on the unified hierarchy); it
// makes its own child cgroup there and removes it.
func TestRealCgroup(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("helper process")
	}
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted (/proc/self/mountinfo has no cgroup2)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup")
	}
	sub, err := os.ReadFile(filepath.Join(mnt, "cgroup.subtree_control"))
	if err != nil || !strings.Contains(" "+strings.TrimSpace(string(sub))+" ", " memory ") {
		ctl, _ := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
		t.Skipf("the cgroup v2 hierarchy at %s does not give the memory controller to its children (controllers %q, subtree_control %q): a hybrid or v1 host", mnt, strings.TrimSpace(string(ctl)), strings.TrimSpace(string(sub)))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skipf("%s is not cgroup2: %v", mnt, err)
	}
	dir := filepath.Join(mnt, fmt.Sprintf("compute-tools-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})

	const hold = 64 * MiB
	child := startHolder(t, dir, hold)
	defer child.stop(t)

	w, _ := newWatcher(t, FixedDir(dir))
	w.SetThreshold(32 * MiB)
	w.step(context.Background(), at(0))
	w.step(context.Background(), at(100))
	s := w.Last()
	if s.History.Samples != 2 || s.History.AvgNonReclaimable < hold {
		t.Fatalf("watching %s: %+v, want 2 samples of at least %d bytes", dir, s.History, hold)
	}
	if !requested(w) {
		t.Error("no upscale request with 64 MiB held against a 32 MiB threshold")
	}
	t.Logf("non-reclaimable memory of a process holding 64 MiB: %d bytes", s.History.AvgNonReclaimable)
}

// Lookups that keep failing back off (1 s, then doubling up to MaxRelocateEvery); a
// lookup that succeeds brings the wait back to RelocateEvery for the next time the
// directory goes away.
func TestWatcherRelocationBacksOff(t *testing.T) {
	c := newCG(t)
	loc := &countingLocator{err: errors.New("no memory controller")}
	w, _ := newWatcher(t, loc.locate)
	ctx := context.Background()
	var calls []int
	for ms := 0; ms <= 120_000; ms += 100 {
		before := loc.n()
		w.step(ctx, at(ms))
		if loc.n() != before {
			calls = append(calls, ms)
		}
	}
	want := []int{0, 1000, 3000, 7000, 15000, 31000, 61000, 91000}
	if !slices.Equal(calls, want) {
		t.Fatalf("lookups at %v ms, want %v", calls, want)
	}
	loc.mu.Lock()
	loc.dir, loc.err = c.dir, nil
	loc.mu.Unlock()
	c.anon(100 * MiB)
	w.step(ctx, at(121_000))
	if loc.n() != len(want)+1 || w.Last().History.Samples != 1 {
		t.Fatalf("the lookup at 121 s did not find the cgroup: %d lookups, %+v", loc.n(), w.Last())
	}
	// The directory goes away: the next lookup is a second later, not 30 s.
	if err := os.Remove(filepath.Join(c.dir, "memory.stat")); err != nil {
		t.Fatal(err)
	}
	w.step(ctx, at(121_100))
	w.step(ctx, at(122_000))
	if loc.n() != len(want)+2 {
		t.Errorf("lookups = %d, want %d: one a second after the directory went away", loc.n(), len(want)+2)
	}
}

// A failed read of memory.events shows zero counters but keeps the last ones as the
// baseline: an OOM kill between the failure and the next good read is still logged.
func TestWatcherEventsBaselineSurvivesFailedRead(t *testing.T) {
	c := newCG(t)
	w, logs := newWatcher(t, FixedDir(c.dir))
	ctx := context.Background()
	c.anon(MiB)
	c.write("memory.events", "oom_kill 2\n")
	ms := 0
	w.step(ctx, at(ms))
	if got := w.Last().Events; got != (Events{OOMKill: 2}) {
		t.Fatalf("events = %+v, want the baseline", got)
	}
	if err := os.Remove(filepath.Join(c.dir, "memory.events")); err != nil {
		t.Fatal(err)
	}
	for w.Last().Events != (Events{}) && ms < 100*eventsEvery*2 {
		ms += 100
		w.step(ctx, at(ms))
	}
	if got := w.Last().Events; got != (Events{}) {
		t.Fatalf("events after a failed read = %+v, want zero", got)
	}
	c.write("memory.events", "oom_kill 3\n")
	for w.Last().Events == (Events{}) && ms < 100*eventsEvery*4 {
		ms += 100
		w.step(ctx, at(ms))
	}
	if !strings.Contains(logs.String(), "oom_kill=3 new=1") {
		t.Errorf("the OOM kill during the failure was not logged:\n%s", logs)
	}
}
