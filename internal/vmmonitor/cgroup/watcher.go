// Package cgroup watches the memory of the Postgres unit's control group (cgroup v2) for
// the vm-monitor, as Neon's libs/vm_monitor/src/cgroup.rs does: every 100 ms it reads
// memory.stat, counts active_anon + inactive_anon as the non-reclaimable memory, and
// averages the last 5 samples (500 ms); it knows when its last sample was taken, so a
// downscale decision can refuse stale figures. When the average reaches the threshold
// the caller sets (SetThreshold), it offers an upscale request on UpscaleRequests, at
// most once per MinRequestInterval (1 s).
//
// A sample is one pread of memory.stat, kept open while the cgroup lives (cgFile), on a
// tick of a timerfd (internal/clock): on a VM, where every wake-up and system call is
// expensive, ten samples a second cost about 0.13% of a core this way against 0.4% with
// a Go ticker and an open, read, read, close per sample (bench/README.md).
//
// The cgroup is found through systemd (UnitDir): the ControlGroup property of the unit
// (compute-postgres.service) below the cgroup v2 mount (/sys/fs/cgroup), not a fixed
// cgroup name such as the reference's neon-postgres. The watcher only reads cgroup
// files; limits are set through systemd (internal/sysd), never written here.
//
// Upscale requests: UpscaleRequests has room for one pending request. A request is put
// there after a sample at or over the threshold when the last delivered one is at least
// MinRequestInterval old; a pending request is taken back when a sample falls below the
// threshold, so a consumer that comes late (no agent connected) never gets a request
// for pressure that has passed. Callers that rate-limit as well (the protocol layer) may:
// the two limits compose.
//
// Where this differs from the reference, on purpose:
//   - A sample that cannot be read is not taken (the reference's cgroups-rs yields zeros
//     for a file it cannot read, which looks like an idle Postgres and would approve a
//     downscale). The history restarts after a failure (a restarted Postgres has a new
//     cgroup), and the published snapshot at once has an empty history (Samples 0) with
//     the time of the last good sample, so a downscale is denied ("not enough samples")
//     until two samples are in again, and refused as stale once 5 s passed without one.
//   - The cgroup directory is looked up again (at most once per RelocateEvery) after it
//     disappeared, which it does whenever systemd stops the unit; the reference loads
//     the cgroup once, by name. Lookups that keep failing (Postgres stopped for long, or
//     a host whose cgroup v2 hierarchy has no memory controller) back off, doubling up to
//     MaxRelocateEvery: each is a D-Bus call to systemd.
//   - memory.events, which the reference no longer reads (it stopped using memory.high
//     events in neon#5524, polling memory.stat instead), is read for the log only, once
//     every 10 samples (a new cgroup's at its first): an OOM kill or a hit of memory.max
//     is a warning, throttling over memory.high a debug line. It does not trigger upscale requests: memory.high counts page cache too, the
//     very reason the reference moved away from it.
//   - The recent history is logged at debug level every 20 samples (the reference logs
//     it at info every 2 s when it changed, and at least every 15 s).
//   - Upscale requests are offered on a channel (see above) rather than sent on the
//     websocket by the same loop.
package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/computetools/compute-tools/internal/clock"
)

// DefaultRoot is where the cgroup v2 hierarchy is mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Locator returns the directory of the cgroup to watch.
type Locator func(ctx context.Context) (string, error)

// FixedDir always returns dir.
func FixedDir(dir string) Locator {
	return func(context.Context) (string, error) { return dir, nil }
}

// UnitResolver returns a systemd unit's control group, a path below the hierarchy's
// root ("" when the unit is not running). *sysd.Manager implements it.
type UnitResolver interface {
	ControlGroup(ctx context.Context, unit string) (string, error)
}

// UnitDir finds the cgroup of a systemd unit: root (DefaultRoot when "") joined with the
// unit's ControlGroup property. It fails when the unit has no control group (not
// running), when the directory is not on a cgroup v2 file system, or when it has no
// memory.stat (the memory controller is not enabled for it).
func UnitDir(r UnitResolver, unit, root string) Locator {
	if root == "" {
		root = DefaultRoot
	}
	return func(ctx context.Context) (string, error) {
		cg, err := r.ControlGroup(ctx, unit)
		if err != nil {
			return "", err
		}
		if cg == "" {
			return "", fmt.Errorf("%s has no control group (not running?)", unit)
		}
		dir := filepath.Join(root, cg)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return "", fmt.Errorf("cgroup of %s: %w", unit, err)
		}
		if st.Type != unix.CGROUP2_SUPER_MAGIC {
			return "", fmt.Errorf("cgroup of %s: %s is not on a cgroup v2 file system", unit, dir)
		}
		if _, err := os.Stat(filepath.Join(dir, "memory.stat")); err != nil {
			return "", fmt.Errorf("cgroup of %s: no memory controller: %w", unit, err)
		}
		return dir, nil
	}
}

// History summarises the recent samples (the reference's MemoryHistory).
type History struct {
	// AvgNonReclaimable is the mean of the samples' active_anon + inactive_anon, bytes
	// (integer division, as the reference).
	AvgNonReclaimable uint64
	// Samples is how many samples the mean covers (at most Options.HistoryLen).
	Samples int
	// Span is Interval * (Samples - 1), as the reference reports it.
	Span time.Duration
}

// Snapshot is the watcher's latest state.
type Snapshot struct {
	// At is when the last sample was taken; before the first, when the watcher was
	// made (the reference's convention: "no samples for 5 s" and "stale" are one test).
	At      time.Time
	History History
	// Events are the memory.events counters last read (at most 10 samples old; zero when
	// unreadable).
	Events Events
	// Dir is the cgroup directory of the last sample.
	Dir string
}

// Ticker is a running ticker of a Clock.
type Ticker = clock.Ticker

// Clock is the watcher's time source; tests drive a fake one.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Options configure a Watcher; zero fields take the defaults.
type Options struct {
	// Interval between samples: 100 ms.
	Interval time.Duration
	// HistoryLen is how many samples are averaged: 5.
	HistoryLen int
	// MinRequestInterval is the least time between two delivered upscale requests: 1 s.
	MinRequestInterval time.Duration
	// RelocateEvery bounds how often the cgroup is looked up again after its directory
	// went away or could not be found: 1 s, doubled after each lookup that fails, up to
	// MaxRelocateEvery (30 s).
	RelocateEvery    time.Duration
	MaxRelocateEvery time.Duration
	// LocateTimeout bounds one lookup (a D-Bus call): 2 s.
	LocateTimeout time.Duration
	// Clock: the system clock when nil.
	Clock Clock
	// Log: slog.Default() when nil.
	Log *slog.Logger
}

// logEvery is how many samples pass between two debug lines with the history.
const logEvery = 20

// eventsEvery is how many samples pass between two reads of memory.events (once a second
// at the default interval); a new cgroup's is read at its first sample.
const eventsEvery = 10

// Watcher samples a cgroup's memory. Run drives it; the other methods are safe to call
// from any goroutine.
type Watcher struct {
	locate Locator
	opts   Options
	log    *slog.Logger

	threshold atomic.Uint64
	requests  chan struct{}

	mu   sync.Mutex
	snap Snapshot

	// Owned by the goroutine running Run.
	dir         string
	lastLocate  time.Time
	locateEvery time.Duration // the current wait between lookups (backs off)
	paced       bool          // Run's ticker is paced by the lookups: each tick is one
	ring        []uint64
	n           int // samples in ring, at most len(ring)
	next        int // where the next sample goes
	total       uint64
	failing     bool
	lastReq     time.Time
	events      Events
	haveEvents  bool
	eventsTried bool   // memory.events was read, or tried, since the cgroup was found
	eventsRead  Events // what the last read gave (zero when it failed)
	stat        cgFile // memory.stat of dir
	eventsFile  cgFile // memory.events of dir
}

// NewWatcher makes a watcher of the cgroup that locate finds.
func NewWatcher(locate Locator, opts Options) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.HistoryLen <= 0 {
		opts.HistoryLen = 5
	}
	if opts.MinRequestInterval <= 0 {
		opts.MinRequestInterval = time.Second
	}
	if opts.RelocateEvery <= 0 {
		opts.RelocateEvery = time.Second
	}
	if opts.MaxRelocateEvery < opts.RelocateEvery {
		opts.MaxRelocateEvery = max(30*time.Second, opts.RelocateEvery)
	}
	if opts.LocateTimeout <= 0 {
		opts.LocateTimeout = 2 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.System{}
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{
		locate:     locate,
		opts:       opts,
		log:        log,
		requests:   make(chan struct{}, 1),
		snap:       Snapshot{At: opts.Clock.Now()},
		ring:       make([]uint64, opts.HistoryLen),
		stat:       cgFile{fd: -1},
		eventsFile: cgFile{fd: -1},
	}
}

// Run samples once at once and then every Interval until ctx ends; it returns nil then.
// While it has no cgroup to read (not found yet, or gone), it wakes only for the next
// lookup (period), not every Interval: an idle process that wakes ten times a second for
// nothing costs a VM without a memory controller CPU for nothing.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.closeFiles()
	w.step(ctx, w.opts.Clock.Now())
	every := w.period()
	t := w.opts.Clock.NewTicker(every)
	defer func() { t.Stop() }()
	for {
		// A ticker paced by the lookups asks for one at every tick: its ticks keep their
		// phase, so one that fires a little late makes the next come a little less than
		// a period after the lookup, which the wait in step would skip.
		w.paced = every > w.opts.Interval
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C():
			w.step(ctx, now)
		}
		if p := w.period(); p != every {
			t.Stop()
			every = p
			t = w.opts.Clock.NewTicker(every)
		}
	}
}

// period is how long Run waits for the next step: Interval while a cgroup is watched,
// the wait until the next lookup (locateEvery, at least Interval) while none is.
func (w *Watcher) period() time.Duration {
	if w.dir != "" || w.locateEvery <= w.opts.Interval {
		return w.opts.Interval
	}
	return w.locateEvery
}

// Last returns the latest snapshot.
func (w *Watcher) Last() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}

// SetThreshold sets the average non-reclaimable memory (bytes) at which upscaling is
// wanted; 0, the initial value, means never.
func (w *Watcher) SetThreshold(bytes uint64) { w.threshold.Store(bytes) }

// Threshold returns the threshold last set.
func (w *Watcher) Threshold() uint64 { return w.threshold.Load() }

// UpscaleRequests delivers "upscale wanted" (see the package comment for when).
func (w *Watcher) UpscaleRequests() <-chan struct{} { return w.requests }

// step takes one sample at now.
func (w *Watcher) step(ctx context.Context, now time.Time) {
	if w.dir == "" {
		if w.locateEvery == 0 {
			w.locateEvery = w.opts.RelocateEvery
		}
		if !w.lastLocate.IsZero() && !w.paced && now.Sub(w.lastLocate) < w.locateEvery {
			return
		}
		first := w.lastLocate.IsZero()
		w.lastLocate = now
		lctx, cancel := context.WithTimeout(ctx, w.opts.LocateTimeout)
		dir, err := w.locate(lctx)
		cancel()
		if err != nil {
			if !first {
				w.locateEvery = min(2*w.locateEvery, w.opts.MaxRelocateEvery)
			}
			w.fail("find the cgroup", err)
			return
		}
		w.locateEvery = w.opts.RelocateEvery
		w.setDir(dir)
		w.log.Info("watching cgroup memory", "dir", dir)
	}
	b, err := w.stat.read()
	var anon uint64
	if err == nil {
		anon, err = ParseMemoryStat(b)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			w.setDir("") // the unit stopped; its next run has a new directory
		}
		w.fail("read memory.stat", err)
		return
	}
	if w.failing {
		w.failing = false
		w.log.Info("cgroup memory stats available again", "dir", w.dir)
	}
	// memory.events only tells the log about OOM kills and limits reached (the reference
	// reads memory.stat alone): once a second is enough, and every read is a wake-up's
	// worth of work at ten samples a second.
	if !w.eventsTried || w.total%eventsEvery == 0 {
		w.eventsTried = true
		w.eventsRead = w.readEvents()
	}
	events := w.eventsRead

	w.ring[w.next] = anon
	w.next = (w.next + 1) % len(w.ring)
	w.n = min(w.n+1, len(w.ring))
	// The ring fills from index 0 after every restart of the history, so its first n
	// entries are the samples (all of them once it has wrapped).
	var sum uint64
	for _, v := range w.ring[:w.n] {
		sum += v
	}
	h := History{
		AvgNonReclaimable: sum / uint64(w.n),
		Samples:           w.n,
		Span:              w.opts.Interval * time.Duration(w.n-1),
	}
	w.mu.Lock()
	w.snap = Snapshot{At: now, History: h, Events: events, Dir: w.dir}
	w.mu.Unlock()

	w.total++
	thr := w.threshold.Load()
	if w.total%logEvery == 0 {
		w.log.Debug("cgroup memory", "avg_non_reclaimable_mib", h.AvgNonReclaimable/(1<<20),
			"last_mib", anon/(1<<20), "threshold_mib", thr/(1<<20), "samples", h.Samples)
	}
	w.pressure(now, h.AvgNonReclaimable, thr)
}

// pressure offers an upscale request, or takes a pending one back.
func (w *Watcher) pressure(now time.Time, avg, thr uint64) {
	if thr == 0 || avg < thr {
		select {
		case <-w.requests: // pressure passed before anyone took the request
		default:
		}
		return
	}
	if !w.lastReq.IsZero() && now.Sub(w.lastReq) < w.opts.MinRequestInterval {
		return
	}
	select {
	case w.requests <- struct{}{}:
		w.lastReq = now
		w.log.Info("cgroup memory stats are high enough to upscale, requesting upscale",
			"avg_non_reclaimable_mib", avg/(1<<20), "threshold_mib", thr/(1<<20))
	default: // one is pending already
	}
}

// readEvents reads memory.events and logs what changed since the last read.
func (w *Watcher) readEvents() Events {
	b, err := w.eventsFile.read()
	var e Events
	if err == nil {
		e, err = ParseMemoryEvents(b)
	}
	if err != nil {
		// Zero in the snapshot; the counters last read stay the baseline, so what happens
		// meanwhile is logged at the next good read.
		return Events{}
	}
	prev, had := w.events, w.haveEvents
	w.events, w.haveEvents = e, true
	// Counters only grow; smaller ones belong to a new cgroup (the unit restarted).
	if !had || e.OOMKill < prev.OOMKill || e.Max < prev.Max || e.High < prev.High {
		return e
	}
	if e.OOMKill > prev.OOMKill {
		w.log.Warn("processes in the cgroup were killed by the OOM killer", "dir", w.dir, "oom_kill", e.OOMKill, "new", e.OOMKill-prev.OOMKill)
	}
	if e.Max > prev.Max {
		w.log.Warn("cgroup memory usage reached memory.max", "dir", w.dir, "max", e.Max, "new", e.Max-prev.Max)
	}
	if e.High > prev.High {
		w.log.Debug("cgroup memory usage over memory.high (reclaim, throttling)", "dir", w.dir, "high", e.High, "new", e.High-prev.High)
	}
	return e
}

// setDir makes dir ("": none) the watched directory: the files of the last one are
// closed (their buffers kept), and its memory.events counters are no baseline for it.
func (w *Watcher) setDir(dir string) {
	w.dir = dir
	w.haveEvents, w.eventsTried = false, false
	if dir == "" {
		w.closeFiles()
		return
	}
	w.stat.reset(filepath.Join(dir, "memory.stat"))
	w.eventsFile.reset(filepath.Join(dir, "memory.events"))
}

// closeFiles closes the files kept open.
func (w *Watcher) closeFiles() {
	w.stat.close()
	w.eventsFile.close()
}

// fail records a sample that could not be taken: the history restarts, and the failure
// is logged once until a sample succeeds again. The published snapshot's history is
// emptied too, keeping the time of the last sample: a downscale decided meanwhile is
// denied for too few samples, then refused as stale once that time is 5 s old, and never
// decided on the figures of a cgroup that is gone.
func (w *Watcher) fail(what string, err error) {
	w.n, w.next = 0, 0
	w.mu.Lock()
	w.snap.History = History{}
	w.mu.Unlock()
	select {
	case <-w.requests: // no pressure known any more
	default:
	}
	if !w.failing {
		w.failing = true
		w.log.Warn("cgroup memory stats unavailable", "op", what, "err", err)
	}
}
