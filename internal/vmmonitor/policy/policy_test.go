package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
)

// journal records the side effects in their order.
type journal struct {
	mu    sync.Mutex
	calls []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls = append(j.calls, fmt.Sprintf(format, args...))
}

func (j *journal) take() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	c := j.calls
	j.calls = nil
	return c
}

// recCache is a FileCache that records and answers as configured.
type recCache struct {
	j      *journal
	result func(bytes uint64) filecache.Result
	err    error
}

func (c *recCache) Set(_ context.Context, bytes uint64) (filecache.Result, error) {
	c.j.add("cache %d MiB", bytes/MiB)
	if c.err != nil {
		return filecache.Result{}, c.err
	}
	if c.result != nil {
		return c.result(bytes), nil
	}
	return filecache.Result{Applied: true, Bytes: bytes, MaxBytes: 1 << 40}, nil
}

type recLimit struct {
	j   *journal
	err error
}

func (l *recLimit) SetMemoryHigh(_ context.Context, bytes uint64) error {
	l.j.add("memory high %d", bytes)
	return l.err
}

// recWatcher is a Watcher whose snapshot the test sets.
type recWatcher struct {
	j    *journal
	snap cgroup.Snapshot
	thr  uint64
	req  chan struct{}
}

func (w *recWatcher) Last() cgroup.Snapshot { return w.snap }
func (w *recWatcher) SetThreshold(b uint64) { w.j.add("threshold %d", b); w.thr = b }
func (w *recWatcher) Threshold() uint64     { return w.thr }
func (w *recWatcher) UpscaleRequests() <-chan struct{} {
	return w.req
}

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

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

var now0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type setup struct {
	j     *journal
	w     *recWatcher
	cache *recCache
	limit *recLimit
	p     *Policy
	logs  *logBuf
}

func newSetup(t *testing.T, mod func(*Options)) *setup {
	t.Helper()
	j := &journal{}
	s := &setup{j: j, w: &recWatcher{j: j, req: make(chan struct{})}, cache: &recCache{j: j}, limit: &recLimit{j: j}}
	log, logs := newLog()
	s.logs = logs
	o := Options{
		Watcher: s.w, FileCache: s.cache, Limit: s.limit, Log: log,
		Now:      func() time.Time { return now0 },
		MemTotal: func() (uint64, error) { return 4125159424, nil },
	}
	if mod != nil {
		mod(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	s.p = p
	return s
}

func (s *setup) stats(samples int, avg uint64) {
	s.w.snap = cgroup.Snapshot{At: now0.Add(-100 * time.Millisecond), History: cgroup.History{Samples: samples, AvgNonReclaimable: avg}}
}

func expect(t *testing.T, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("side effects\n got %q\nwant %q", got, want)
	}
}

func TestPolicyStart(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, nil)
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// MemTotal 4125159424 (see TestSizes): limit at MemTotal, cache 2950 MiB,
	// threshold 3506385510.
	expect(t, s.j.take(), "memory high 4125159424", "cache 2950 MiB", "threshold 3506385510")
	// Again (the next agent connection): the limit is the one applied, not set again
	// (the file cache skips an unchanged size itself).
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "cache 2950 MiB", "threshold 3506385510")

	// Neither the limit nor the cache can be set (systemd refuses, Postgres is down):
	// warnings, not an error, so that the agent's connection stays; the threshold is
	// set. The failed limit is unknown, so the next Start sets it again.
	s = newSetup(t, nil)
	s.cache.err = errors.New("connection refused")
	s.limit.err = errors.New("access denied")
	if err := s.p.Start(ctx); err != nil {
		t.Errorf("Start with a failing cache and limit = %v, want warnings only", err)
	}
	expect(t, s.j.take(), "memory high 4125159424", "cache 2950 MiB", "threshold 3506385510")
	for _, w := range []string{
		`level=WARN msg="memory limit not set at the connection's start; the next scaling request tries again" err="failed to set the memory limit: access denied"`,
		`level=WARN msg="file cache size not set at the connection's start (Postgres down, or inadequate permissions?); the next scaling request tries again" err="connection refused"`,
	} {
		if !strings.Contains(s.logs.String(), w) {
			t.Errorf("log lacks %s:\n%s", w, s.logs)
		}
	}
	s.cache.err, s.limit.err = nil, nil
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "memory high 4125159424", "cache 2950 MiB", "threshold 3506385510")

	bad := newSetup(t, func(o *Options) { o.MemTotal = func() (uint64, error) { return 0, errors.New("no /proc") } })
	if err := bad.p.Start(ctx); err == nil || !strings.Contains(err.Error(), "read total memory: no /proc") {
		t.Errorf("Start without MemTotal = %v", err)
	}
}

// TestPolicyGuards: what a client that connects and notifies any "upscale" can do to
// the memory limit, and what a new connection's start does with what was applied.
func TestPolicyGuards(t *testing.T) {
	ctx := context.Background()
	st := NewState()
	s := newSetup(t, func(o *Options) { o.State = st })
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.j.take()

	// A rogue "upscale" to 101 MiB (usable 1 MiB) before any grant: the limit stays at
	// MemTotal (an upscale never lowers it). The cache and threshold follow the grant,
	// as the reference's.
	if err := s.p.Upscale(ctx, Allocation{CPU: 0.25, Mem: 101 * MiB}); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "cache 0 MiB", "threshold 891289")
	if h, ok := st.MemoryHigh(); !ok || h != 4125159424 {
		t.Errorf("MemoryHigh after the rogue upscale = %d, %v; want MemTotal 4125159424", h, ok)
	}

	// The agent grants 8 GiB: applied. Then an "upscale" below it: refused before
	// anything changes.
	if err := s.p.Upscale(ctx, Allocation{CPU: 2, Mem: 8 * GiB}); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "memory high 8485076992", "cache 6069 MiB", "threshold 7212315443")
	err := s.p.Upscale(ctx, Allocation{CPU: 0.25, Mem: 101 * MiB})
	if err == nil || err.Error() != "upscale refused: granted memory 101 MiB is below the allocation applied last, 8192 MiB" {
		t.Errorf("an upscale below the last grant = %v", err)
	}
	expect(t, s.j.take())
	// An equal grant is no decrease.
	if err := s.p.Upscale(ctx, Allocation{CPU: 2, Mem: 8 * GiB}); err != nil {
		t.Errorf("the same grant again = %v", err)
	}
	expect(t, s.j.take(), "cache 6069 MiB", "threshold 7212315443")

	// A new connection (a new Policy over the same State): MemTotal (4125159424) is
	// smaller than the 8 GiB granted (the hot-plugged memory does not show yet), so the
	// limit stays at the grant's usable memory; and the rogue upscale is still refused.
	s2 := newSetup(t, func(o *Options) { o.State = st })
	if err := s2.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, s2.j.take(), "cache 2950 MiB", "threshold 3506385510")
	if h, _ := st.MemoryHigh(); h != 8485076992 {
		t.Errorf("MemoryHigh after the new connection's start = %d, want 8485076992", h)
	}
	if err := s2.p.Upscale(ctx, Allocation{Mem: 101 * MiB}); err == nil {
		t.Error("a new connection's upscale below the last grant was accepted")
	}

	// An approved downscale lowers the allocation: a later, smaller grant is fine.
	s2.stats(5, 100*MiB)
	if ok, status, err := s2.p.Downscale(ctx, Allocation{Mem: 2 * GiB}); !ok || err != nil {
		t.Fatalf("Downscale = %v %q %v", ok, status, err)
	}
	s2.j.take()
	if a, _ := st.Allocation(); a != 2*GiB {
		t.Errorf("allocation after the downscale = %d", a)
	}
	if err := s2.p.Upscale(ctx, Allocation{Mem: 3 * GiB}); err != nil {
		t.Errorf("an upscale above the downscaled allocation = %v", err)
	}
}

// TestPolicyFloor: MemoryHigh= never goes below the average usage plus the downscale
// buffer, whoever sets it.
func TestPolicyFloor(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, func(o *Options) { o.MemTotal = func() (uint64, error) { return 2 * GiB, nil } })
	// 2000 MiB in use: the floor is 2100 MiB, above MemTotal (2048 MiB).
	s.stats(5, 2000*MiB)
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), fmt.Sprintf("memory high %d", 2100*MiB), "cache 1536 MiB", "threshold 1825361100")
	// A grant of 2 GiB (usable 1948 MiB): the limit would be below the floor, and below
	// what is applied; it stays.
	if err := s.p.Upscale(ctx, Allocation{Mem: 2 * GiB}); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "cache 1461 MiB", fmt.Sprintf("threshold %d", threshold2G))
	// No samples: no floor.
	s = newSetup(t, func(o *Options) { o.MemTotal = func() (uint64, error) { return 2 * GiB, nil } })
	s.stats(0, 0)
	if err := s.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), fmt.Sprintf("memory high %d", 2*GiB), "cache 1536 MiB", "threshold 1825361100")
}

func TestPolicyDownscale(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, nil)
	s.w.thr = 3561593241 // from a 4 GiB grant

	// Not enough samples: denied, nothing changed.
	s.stats(1, 100*MiB)
	ok, status, err := s.p.Downscale(ctx, Allocation{CPU: 1, Mem: 2 * GiB})
	if ok || status != "haven't received enough cgroup memory stats yet" || err != nil {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take())

	// Usage too high: denied with the figures.
	s.stats(5, 1600*MiB)
	ok, status, err = s.p.Downscale(ctx, Allocation{CPU: 1, Mem: 2 * GiB})
	if ok || err != nil || status != "calculated memory threshold too low: 1655.8 MiB (new threshold) < 1600 (current usage) + 100 (downscale buffer)" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take())
	if !strings.Contains(s.logs.String(), "discontinuing downscale") {
		t.Errorf("the denial is not logged:\n%s", s.logs)
	}

	// Approved: cache first, then the limit, then the threshold.
	s.stats(5, 1500*MiB)
	ok, status, err = s.p.Downscale(ctx, Allocation{CPU: 1, Mem: 2 * GiB})
	if !ok || err != nil || status != "set file cache size to 1461 MiB; set cgroup memory threshold from 3396.6 MiB to 1655.8 MiB, of new total 1948 MiB" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take(), "cache 1461 MiB", fmt.Sprintf("memory high %d", usable2G), fmt.Sprintf("threshold %d", threshold2G))

	// Stale statistics: an error, nothing changed.
	s.w.snap.At = now0.Add(-5*time.Second - time.Millisecond)
	ok, status, err = s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if ok || status != "" || err == nil || err.Error() != ErrStale {
		t.Errorf("Downscale with stale stats = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take())

	// The cache fails: an error, and neither the limit nor the threshold moved.
	s.stats(5, 100*MiB)
	s.cache.err = errors.New("connection refused")
	ok, _, err = s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if ok || err == nil || err.Error() != "failed to set file cache size: connection refused" {
		t.Errorf("Downscale with a failing cache = %v, %v", ok, err)
	}
	expect(t, s.j.take(), "cache 1461 MiB")
	s.cache.err = nil

	// The limit fails: an error, the threshold did not move. (A 3 GiB target: the limit
	// of the 2 GiB one is applied already, and would not be set again.)
	s.limit.err = errors.New("access denied")
	ok, _, err = s.p.Downscale(ctx, Allocation{Mem: 3 * GiB})
	if ok || err == nil || err.Error() != "failed to set the memory limit: access denied" {
		t.Errorf("Downscale with a failing limit = %v, %v", ok, err)
	}
	expect(t, s.j.take(), "cache 2229 MiB", fmt.Sprintf("memory high %d", 3*GiB-100*MiB))
	s.limit.err = nil

	// A cache the server does not know: not resized, said in the status.
	s.cache.result = func(uint64) filecache.Result {
		return filecache.Result{Reason: "neon.file_cache_size_limit is not a setting of this server (no neon extension)"}
	}
	ok, status, err = s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if !ok || err != nil || status != "file cache not resized: neon.file_cache_size_limit is not a setting of this server (no neon extension); set cgroup memory threshold from 1655.8 MiB to 1655.8 MiB, of new total 1948 MiB" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
}

func TestPolicyDownscaleWhatIsManaged(t *testing.T) {
	ctx := context.Background()
	// Nothing managed: ok at once.
	s := newSetup(t, func(o *Options) { o.Watcher, o.FileCache, o.Limit = nil, nil, nil })
	ok, status, err := s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if !ok || err != nil || status != "monitor is not managing cgroup or file cache" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	if s.p.UpscaleRequests() != nil {
		t.Error("upscale requests without a watcher")
	}
	if err := s.p.Upscale(ctx, Allocation{Mem: 4 * GiB}); err != nil {
		t.Errorf("Upscale with nothing managed = %v", err)
	}
	expect(t, s.j.take())

	// LFC resizing off (disable_lfc_resizing): the cgroup only.
	s = newSetup(t, func(o *Options) { o.FileCache = nil })
	s.stats(5, 100*MiB)
	ok, status, err = s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if !ok || err != nil || status != "set cgroup memory threshold from 0 MiB to 1655.8 MiB, of new total 1948 MiB" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take(), fmt.Sprintf("memory high %d", usable2G), fmt.Sprintf("threshold %d", threshold2G))

	// No cgroup: the cache only, no statistics needed (stale ones do not matter).
	s = newSetup(t, func(o *Options) { o.Watcher = nil })
	ok, status, err = s.p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if !ok || err != nil || status != "set file cache size to 1461 MiB" {
		t.Errorf("Downscale = %v, %q, %v", ok, status, err)
	}
	expect(t, s.j.take(), "cache 1461 MiB", fmt.Sprintf("memory high %d", usable2G))

	// MemoryHigh at the threshold.
	s = newSetup(t, func(o *Options) { o.Rules = DefaultRules(); o.Rules.MemoryHighAtThreshold = true })
	s.stats(5, 100*MiB)
	if ok, _, err := s.p.Downscale(ctx, Allocation{Mem: 2 * GiB}); !ok || err != nil {
		t.Fatalf("Downscale = %v, %v", ok, err)
	}
	expect(t, s.j.take(), "cache 1461 MiB", fmt.Sprintf("memory high %d", threshold2G), fmt.Sprintf("threshold %d", threshold2G))
}

func TestPolicyUpscale(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, nil)
	s.w.thr = threshold2G
	// From granted.mem, 4 GiB: usable 4190109696, cache 2997 MiB, threshold 3561593241;
	// the limit is raised first.
	if err := s.p.Upscale(ctx, Allocation{CPU: 2, Mem: 4 * GiB}); err != nil {
		t.Fatal(err)
	}
	expect(t, s.j.take(), "memory high 4190109696", "cache 2997 MiB", "threshold 3561593241")
	if !strings.Contains(s.logs.String(), `msg="set cgroup memory threshold" from_mib=1655 to_mib=3396 total_mib=3996`) {
		t.Errorf("log:\n%s", s.logs)
	}

	// A cache capped by the server's maximum is a warning, not an error.
	s.cache.result = func(uint64) filecache.Result {
		return filecache.Result{Applied: true, Bytes: 1024 * MiB, Capped: true, MaxBytes: 1024 * MiB}
	}
	if err := s.p.Upscale(ctx, Allocation{Mem: 4 * GiB}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.logs.String(), `msg="file cache was set to a different size than wanted" target_mib=2997 actual_mib=1024`) {
		t.Errorf("log:\n%s", s.logs)
	}
	s.j.take()

	s.limit.err = errors.New("access denied")
	if err := s.p.Upscale(ctx, Allocation{Mem: 8 * GiB}); err == nil || err.Error() != "failed to set the memory limit: access denied" {
		t.Errorf("Upscale with a failing limit = %v", err)
	}
	expect(t, s.j.take(), "memory high 8485076992")
	s.limit.err = nil
	s.cache.err = errors.New("boom")
	if err := s.p.Upscale(ctx, Allocation{Mem: 8 * GiB}); err == nil || err.Error() != "failed to set file cache size: boom" {
		t.Errorf("Upscale with a failing cache = %v", err)
	}
	expect(t, s.j.take(), "memory high 8485076992", "cache 6069 MiB")
}

func TestReadMemTotal(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content string
		want          uint64
		wantErr       bool
	}{
		{"debian", "MemTotal:        4028476 kB\nMemFree:         1234 kB\n", 4125159424, false}, // 4028476 * 1024
		{"not first", "MemFree: 1 kB\nMemTotal: 1 kB\n", 1024, false},
		{"missing", "MemFree: 1 kB\n", 0, true},
		{"no unit", "MemTotal: 1\n", 0, true},
		{"bad number", "MemTotal: x kB\n", 0, true},
	} {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadMemTotal(p)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: ReadMemTotal = %d, %v; want %d (error %v)", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
	if got, err := ReadMemTotal("/proc/meminfo"); err != nil || got == 0 {
		t.Errorf("ReadMemTotal(/proc/meminfo) = %d, %v", got, err)
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	r := DefaultRules()
	r.Sizing.SysBufferBytes = 0
	if _, err := New(Options{Rules: r}); err == nil {
		t.Error("a zero sys buffer was accepted")
	}
	r = DefaultRules()
	r.FileCache.SpreadFactor = 1
	if _, err := New(Options{Rules: r}); err == nil {
		t.Error("incompatible file cache parameters were accepted")
	}
	r = DefaultRules()
	r.StaleAfter = 0
	if _, err := New(Options{Rules: r}); err == nil {
		t.Error("StaleAfter 0 was accepted")
	}
}

// fakeClock drives the real watcher: the test feeds its ticks.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	ticks chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) NewTicker(time.Duration) cgroup.Ticker { return c }
func (c *fakeClock) C() <-chan time.Time                   { return c.ticks }
func (c *fakeClock) Stop()                                 {}

// tick advances the clock by d and makes the watcher sample. The ticks are unbuffered:
// when a tick is taken, the sample of the one before is complete.
func (c *fakeClock) tick(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	c.ticks <- now
}

// TestPolicyRealPieces runs the policy over the real cgroup watcher (on a directory of
// files the test writes) and the real file cache client on PostgreSQL 15 with the neon
// settings as placeholders (vanilla PostgreSQL with a neon spec's settings): the file
// cache is left alone, and the statuses say so.
func TestPolicyRealPieces(t *testing.T) {
	inst := pgtest.Start(t)
	conf, err := os.OpenFile(filepath.Join(inst.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.WriteString("neon.file_cache_size_limit = '128MB'\nneon.max_file_cache_size = '2GB'\n"); err != nil {
		t.Fatal(err)
	}
	conf.Close()
	inst.Reload(t)
	ctx := context.Background()
	log, logs := newLog()
	fc := filecache.New(inst.Connstr(), log)
	defer fc.Close()
	// The reload is asynchronous: wait until the server knows the settings.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, err := fc.Probe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Known && s.HaveMax {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the placeholders never appeared: %+v", s)
		}
	}

	dir := t.TempDir()
	writeAnon := func(b uint64) {
		if err := os.WriteFile(filepath.Join(dir, "memory.stat"), fmt.Appendf(nil, "active_anon %d\ninactive_anon 0\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeAnon(1500 * MiB)
	clock := &fakeClock{now: now0, ticks: make(chan time.Time)}
	w := cgroup.NewWatcher(cgroup.FixedDir(dir), cgroup.Options{Clock: clock, Log: log})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	j := &journal{}
	p, err := New(Options{Watcher: w, FileCache: fc, Limit: &recLimit{j: j}, Log: log, Now: clock.Now,
		MemTotal: func() (uint64, error) { return 4 * GiB, nil }})
	if err != nil {
		t.Fatal(err)
	}
	// Start: 4 GiB MemTotal: threshold 3650722201; the cache (a placeholder) is not resized.
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Threshold() != 3650722201 {
		t.Errorf("threshold after Start = %d", w.Threshold())
	}
	const notResized = "file cache not resized: neon.file_cache_size_limit is only a placeholder here (the neon extension's library is not loaded), so resizing it would change nothing"
	if got := autoConf(t, inst); strings.Contains(got, "neon") {
		t.Errorf("postgresql.auto.conf after Start:\n%s", got)
	}

	// Run samples once at once, then at each tick; before the first tick it has taken
	// at most one sample: not enough to decide.
	ok, status, err := p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if ok || err != nil || status != "haven't received enough cgroup memory stats yet" {
		t.Fatalf("Downscale before the second sample = %v, %q, %v", ok, status, err)
	}
	// A tick is taken once the sample before it is complete: after two, at least two
	// samples (1500 MiB) are in.
	clock.tick(100 * time.Millisecond)
	clock.tick(100 * time.Millisecond)
	ok, status, err = p.Downscale(ctx, Allocation{Mem: 2 * GiB})
	if !ok || err != nil || status != notResized+"; set cgroup memory threshold from 3481.6 MiB to 1655.8 MiB, of new total 1948 MiB" {
		t.Fatalf("Downscale = %v, %q, %v", ok, status, err)
	}

	// Usage climbs over the new threshold (1655.8 MiB): an upscale request.
	writeAnon(1800 * MiB)
	for i := 0; i < 6; i++ {
		clock.tick(100 * time.Millisecond)
	}
	select {
	case <-p.UpscaleRequests():
	case <-time.After(10 * time.Second):
		t.Fatalf("no upscale request with 1800 MiB used over a %d threshold; watcher: %+v", w.Threshold(), w.Last())
	}
	// The agent grants 4 GiB.
	if err := p.Upscale(ctx, Allocation{CPU: 2, Mem: 4 * GiB}); err != nil {
		t.Fatal(err)
	}
	if w.Threshold() != 3561593241 {
		t.Errorf("threshold after the upscale = %d, want 3561593241", w.Threshold())
	}
	if got := autoConf(t, inst); strings.Contains(got, "neon") {
		t.Errorf("postgresql.auto.conf after the upscale:\n%s", got)
	}
	expect(t, j.take(), "memory high 4294967296", fmt.Sprintf("memory high %d", usable2G), "memory high 4190109696")

	// The samples stop (Postgres gone): 5.3 s later a downscale request fails. (The
	// last good sample is at least 5.3 s old, and none can succeed after the removal.)
	if err := os.Remove(filepath.Join(dir, "memory.stat")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 53; i++ {
		clock.tick(100 * time.Millisecond)
	}
	if _, _, err := p.Downscale(ctx, Allocation{Mem: 2 * GiB}); err == nil || err.Error() != ErrStale {
		t.Errorf("Downscale with stale stats = %v; watcher %+v at %v", err, w.Last(), clock.Now())
	}
	if !strings.Contains(logs.String(), "cgroup memory stats unavailable") {
		t.Errorf("the watcher's failure is not logged:\n%s", logs)
	}
}

func autoConf(t *testing.T, inst *pgtest.Instance) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(inst.DataDir, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
