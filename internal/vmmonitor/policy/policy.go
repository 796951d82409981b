// Package policy is what the vm-monitor does with the autoscaler agent's requests: the
// decisions of Neon's libs/vm_monitor/src/runner.rs (try_downscale, handle_upscale,
// Runner::new) over three narrow side effects: the file cache (filecache.PG), the
// cgroup watcher's threshold (cgroup.Watcher), and MemoryHigh= of the Postgres unit
// through systemd (sysd.Manager via UnitMemoryHigh). The decisions themselves are pure
// (Rules.DecideDownscale, Rules.ForAllocation, ApprovedStatus) and tested on tables.
//
// Policy implements what the protocol layer needs:
//
//	Upscale(ctx, granted Allocation) error                      // UpscaleNotification
//	Downscale(ctx, target Allocation) (ok bool, status string, err error) // DownscaleRequest
//	UpscaleRequests() <-chan struct{}                            // send an UpscaleRequest
//
// A Downscale error is answered with InternalError; ok false with a status is a denial
// (DownscaleResult{Ok: false, Status}), not an error.
//
// The rules (the reference's, numbers in internal/vmmonitor/sizing):
//   - Downscale: nothing managed -> ok, "monitor is not managing cgroup or file cache";
//     cgroup statistics older than 5 s -> error; at most one sample -> denied, "haven't
//     received enough cgroup memory stats yet"; new threshold (0.85 x (target - 100 MiB))
//     below the average usage + 100 MiB -> denied, "calculated memory threshold too low:
//     ..."; else the file cache is shrunk first, then the limit and the threshold are
//     lowered, and the answer is ok, "set file cache size to N MiB; set cgroup memory
//     threshold from A MiB to B MiB, of new total C MiB".
//   - Upscale: the cache size, threshold and limit come from granted.mem (minus the 100
//     MiB sys buffer), not from /proc/meminfo: the agent notifies before the guest may
//     see the new memory (autoscaling#593).
//   - Start: the cache and threshold are sized for MemTotal as it is (the reference does
//     this in Runner::new, at each new agent connection; call Start once at startup, or
//     at each connection to match). Start does not fail when the limit or the file
//     cache cannot be set (Postgres down, systemd refusing): those are warnings, the
//     agent's connection stays (its health checks work), and the next Upscale or
//     Downscale that needs them reports the error; only an unreadable MemTotal fails it.
//
// The memory limit is guarded, because any client that reaches the port can connect
// (a new connection replaces the agent's) and notify an "upscale" of any size:
//   - An UpscaleNotification whose granted.mem is below the allocation applied last (the
//     previous grant, or the target of the last approved downscale) is refused with an
//     error (the agent's InternalError), before anything is changed. Only a downscale,
//     which the monitor decides itself, lowers the allocation.
//   - An upscale never lowers MemoryHigh= below the value applied last: it is an upscale.
//   - MemoryHigh= is never set below the cgroup's current average non-reclaimable memory
//     plus the downscale buffer (100 MiB), whoever asks (Start, Upscale; a downscale that
//     would go below it is denied anyway): a floor, applied when the watcher has samples.
//   - Start sets MemoryHigh= for the larger of MemTotal and the allocation applied last
//     (hot-plugged memory may not show in MemTotal yet when the agent reconnects).
//
// That record (State) belongs to the process, not to a connection: give every Policy of
// a process the same State. It also makes repeated side effects free: a MemoryHigh= equal
// to the one applied last is not set again (a reconnecting agent costs no systemd
// property write); the file cache skips an unchanged size itself (filecache.PG.Set).
//
// Where this differs from the reference, on purpose:
//   - The memory limit. The reference keeps its threshold internal (it stopped writing
//     memory.high in neon#5303/#5348/#5524: throttling at the threshold stalled Postgres
//     while the upscale was pending). We set MemoryHigh= on compute-postgres.service
//     through systemd (runtime only), at the usable memory of the allocation (granted or
//     target mem minus the sys buffer; MemTotal at start), which is above the threshold:
//     the upscale request goes out at 85% as before, and the kernel reclaims (page
//     cache first) and throttles only past the memory the VM has, or is about to have
//     after a downscale. Rules.MemoryHighAtThreshold puts it at the threshold instead.
//     On a downscale the limit is lowered after the cache shrank and before the
//     threshold moves; on an upscale it is raised first.
//   - A file cache the server does not know (vanilla PostgreSQL) is not resized: the
//     status then says "file cache not resized: <reason>" in place of "set file cache
//     size to ..." (the reference fails instead).
//   - The watcher runs for the life of the process, not per agent connection.
//   - The guards of the memory limit above, and the State behind them, are ours: the
//     reference trusts every UpscaleNotification (it sizes from granted.mem whatever it
//     is) and starts each connection from scratch.
//   - A limit or file cache that cannot be set at Start is a warning; the reference's
//     Runner::new fails when the file cache cannot be set, which ends the connection.
package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/sizing"
)

// Allocation is an amount of resources: vCPUs and bytes of memory (the agent's
// api.Allocation {"cpu", "mem"}).
type Allocation struct {
	CPU float64
	Mem uint64
}

// Watcher is the cgroup watcher as the policy uses it (*cgroup.Watcher).
type Watcher interface {
	Last() cgroup.Snapshot
	SetThreshold(bytes uint64)
	Threshold() uint64
	UpscaleRequests() <-chan struct{}
}

// FileCache resizes the LFC (*filecache.PG).
type FileCache interface {
	Set(ctx context.Context, bytes uint64) (filecache.Result, error)
}

// MemoryLimit sets the Postgres unit's MemoryHigh= (UnitMemoryHigh).
type MemoryLimit interface {
	SetMemoryHigh(ctx context.Context, bytes uint64) error
}

// UnitMemorySetter sets MemoryHigh= of a named unit (*sysd.Manager).
type UnitMemorySetter interface {
	SetMemoryHigh(ctx context.Context, unit string, bytes uint64) error
}

// UnitMemoryHigh is the MemoryLimit of one unit.
type UnitMemoryHigh struct {
	Systemd UnitMemorySetter
	Unit    string // compute-postgres.service
}

// SetMemoryHigh implements MemoryLimit.
func (u UnitMemoryHigh) SetMemoryHigh(ctx context.Context, bytes uint64) error {
	return u.Systemd.SetMemoryHigh(ctx, u.Unit, bytes)
}

// Options configure a Policy. A nil Watcher, FileCache or Limit is a thing the policy
// does not manage.
type Options struct {
	// Rules: DefaultRules() when zero.
	Rules Rules
	// Watcher: the cgroup watcher; nil: no cgroup (no threshold, no upscale requests).
	Watcher Watcher
	// FileCache: nil when LFC resizing is off (spec disable_lfc_resizing).
	FileCache FileCache
	// Limit: MemoryHigh= of the Postgres unit; nil: none set.
	Limit MemoryLimit
	// State is what was applied last, shared by the policies of one process (see the
	// package comment); nil: a State of this Policy's own.
	State *State
	// MemTotal reads the machine's memory for Start: /proc/meminfo's MemTotal when nil.
	MemTotal func() (uint64, error)
	// Now: time.Now when nil.
	Now func() time.Time
	// Log: slog.Default() when nil.
	Log *slog.Logger
}

// State records what the policies of one process applied last: the allocation (an
// upscale's grant or an approved downscale's target) and MemoryHigh=. Safe for concurrent
// use.
type State struct {
	mu        sync.Mutex
	alloc     uint64
	haveAlloc bool
	high      uint64
	haveHigh  bool
}

// NewState returns an empty State: nothing applied yet.
func NewState() *State { return &State{} }

// Allocation returns the memory of the allocation applied last, and whether there is one.
func (s *State) Allocation() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc, s.haveAlloc
}

// MemoryHigh returns the MemoryHigh= applied last, and whether it is known (it is not
// after a failed set).
func (s *State) MemoryHigh() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.high, s.haveHigh
}

func (s *State) setAllocation(mem uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alloc, s.haveAlloc = mem, true
}

func (s *State) setMemoryHigh(b uint64, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.high, s.haveHigh = b, known
}

// Policy carries out the agent's scaling requests. Its methods run one at a time.
type Policy struct {
	o   Options
	st  *State
	log *slog.Logger
	mu  sync.Mutex
}

// New checks the rules and makes a Policy.
func New(o Options) (*Policy, error) {
	if o.Rules == (Rules{}) {
		o.Rules = DefaultRules()
	}
	if err := o.Rules.Sizing.Validate(); err != nil {
		return nil, err
	}
	if err := o.Rules.FileCache.Validate(); err != nil {
		return nil, err
	}
	if o.Rules.StaleAfter <= 0 {
		return nil, errors.New("policy: StaleAfter must be positive")
	}
	if o.MemTotal == nil {
		o.MemTotal = func() (uint64, error) { return ReadMemTotal("/proc/meminfo") }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	st := o.State
	if st == nil {
		st = NewState()
	}
	return &Policy{o: o, st: st, log: log}, nil
}

// UpscaleRequests delivers the watcher's "upscale wanted"; without a watcher, a channel
// that never delivers.
func (p *Policy) UpscaleRequests() <-chan struct{} {
	if p.o.Watcher == nil {
		return nil
	}
	return p.o.Watcher.UpscaleRequests()
}

// mib is bytes in whole MiB, for log lines.
func mib(b uint64) uint64 { return b / sizing.MiB }

// Start sizes the cache, the limit and the threshold for the machine's MemTotal (the
// limit for the allocation applied last when that is larger). A limit or a file cache
// that cannot be set is a warning (see the package comment); only a MemTotal that
// cannot be read is an error.
func (p *Policy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	total, err := p.o.MemTotal()
	if err != nil {
		return fmt.Errorf("read total memory: %w", err)
	}
	sz := p.o.Rules.ForMemTotal(total)
	high := sz.MemoryHigh
	if last, ok := p.st.Allocation(); ok {
		high = max(high, p.o.Rules.ForAllocation(last).MemoryHigh)
	}
	p.log.Info("initial sizing", "mem_total_mib", mib(total), "cache_mib", mib(sz.Cache),
		"threshold_mib", mib(sz.Threshold), "memory_high_mib", mib(high))
	if err := p.setLimit(ctx, high); err != nil {
		p.log.Warn("memory limit not set at the connection's start; the next scaling request tries again", "err", err)
	}
	if p.o.FileCache != nil {
		if _, err := p.o.FileCache.Set(ctx, sz.Cache); err != nil {
			p.log.Warn("file cache size not set at the connection's start (Postgres down, or inadequate permissions?); the next scaling request tries again", "err", err)
		}
	}
	if p.o.Watcher != nil {
		p.o.Watcher.SetThreshold(sz.Threshold)
	}
	return nil
}

// floor is the least MemoryHigh= may be: the cgroup's average non-reclaimable memory
// plus the downscale buffer; ok false without a watcher or samples.
func (p *Policy) floor() (uint64, bool) {
	if p.o.Watcher == nil {
		return 0, false
	}
	h := p.o.Watcher.Last().History
	if h.Samples == 0 {
		return 0, false
	}
	return h.AvgNonReclaimable + p.o.Rules.Sizing.DownscaleBufferBytes, true
}

// setLimit sets MemoryHigh= to want, raised to the floor; a value equal to the one
// applied last is not set again.
func (p *Policy) setLimit(ctx context.Context, want uint64) error {
	if p.o.Limit == nil {
		return nil
	}
	high := want
	if f, ok := p.floor(); ok && high < f {
		p.log.Info("memory limit raised to the current usage plus the downscale buffer", "wanted_mib", mib(want), "floor_mib", mib(f))
		high = f
	}
	if cur, ok := p.st.MemoryHigh(); ok && cur == high {
		p.log.Debug("memory limit unchanged", "memory_high_mib", mib(high))
		return nil
	}
	if err := p.o.Limit.SetMemoryHigh(ctx, high); err != nil {
		p.st.setMemoryHigh(0, false)
		return fmt.Errorf("failed to set the memory limit: %w", err)
	}
	p.st.setMemoryHigh(high, true)
	p.log.Info("set memory limit", "memory_high_mib", mib(high))
	return nil
}

// Upscale applies an UpscaleNotification: the memory limit is raised, then the cache
// resized and the threshold set, all from granted.Mem. A grant below the allocation
// applied last is refused (an error) with nothing changed, and the limit is never
// lowered.
func (p *Policy) Upscale(ctx context.Context, granted Allocation) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if last, ok := p.st.Allocation(); ok && granted.Mem < last {
		p.log.Warn("refused an upscale below the allocation applied last", "granted_mib", mib(granted.Mem), "applied_mib", mib(last))
		return fmt.Errorf("upscale refused: granted memory %s MiB is below the allocation applied last, %s MiB",
			sizing.MiBString(granted.Mem), sizing.MiBString(last))
	}
	if p.o.Watcher == nil && p.o.FileCache == nil {
		p.log.Info("no action needed for upscale (no cgroup or file cache enabled)")
		return nil
	}
	sz := p.o.Rules.ForAllocation(granted.Mem)
	high := sz.MemoryHigh
	if cur, ok := p.st.MemoryHigh(); ok && high < cur {
		p.log.Info("memory limit kept: an upscale does not lower it", "wanted_mib", mib(high), "memory_high_mib", mib(cur))
		high = cur
	}
	if err := p.setLimit(ctx, high); err != nil {
		return err
	}
	if p.o.FileCache != nil {
		p.log.Info("updating file cache size", "target_mib", mib(sz.Cache), "total_mib", mib(granted.Mem))
		res, err := p.o.FileCache.Set(ctx, sz.Cache)
		if err != nil {
			return fmt.Errorf("failed to set file cache size: %w", err)
		}
		if res.Applied && res.Bytes != sz.Cache {
			p.log.Warn("file cache was set to a different size than wanted", "target_mib", mib(sz.Cache), "actual_mib", mib(res.Bytes))
		}
	}
	if p.o.Watcher != nil {
		old := p.o.Watcher.Threshold()
		p.o.Watcher.SetThreshold(sz.Threshold)
		p.log.Info("set cgroup memory threshold", "from_mib", mib(old), "to_mib", mib(sz.Threshold), "total_mib", mib(sz.Total))
	}
	p.st.setAllocation(granted.Mem)
	return nil
}

// Downscale answers a DownscaleRequest: ok and a status, or not ok and the reason; an
// error is for the agent's InternalError.
func (p *Policy) Downscale(ctx context.Context, target Allocation) (ok bool, status string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := DownscaleInput{TargetMem: target.Mem, Cgroup: p.o.Watcher != nil, Cache: p.o.FileCache != nil, Now: p.o.Now()}
	if p.o.Watcher != nil {
		s := p.o.Watcher.Last()
		in.StatsAt, in.Samples, in.AvgNonReclaimable = s.At, s.History.Samples, s.History.AvgNonReclaimable
	}
	d := p.o.Rules.DecideDownscale(in)
	switch {
	case d.Verdict == Fail:
		return false, "", errors.New(d.Err)
	case d.Verdict == Deny:
		p.log.Info("discontinuing downscale", "status", d.Status)
		return false, d.Status, nil
	case d.NothingManaged:
		p.log.Info("no action needed for downscale (no cgroup or file cache enabled)")
		return true, d.Status, nil
	}
	// Approved: the file cache first, then the limit, then the threshold.
	var a Applied
	if p.o.FileCache != nil {
		res, err := p.o.FileCache.Set(ctx, d.Sizes.Cache)
		if err != nil {
			return false, "", fmt.Errorf("failed to set file cache size: %w", err)
		}
		a.Cache, a.CacheSet, a.CacheBytes, a.CacheReason = true, res.Applied, res.Bytes, res.Reason
	}
	if err := p.setLimit(ctx, d.Sizes.MemoryHigh); err != nil {
		return false, "", err
	}
	if p.o.Watcher != nil {
		a.Cgroup, a.OldThreshold = true, p.o.Watcher.Threshold()
		p.o.Watcher.SetThreshold(d.Sizes.Threshold)
	}
	p.st.setAllocation(target.Mem)
	status = ApprovedStatus(d.Sizes, a)
	p.log.Info("downscale", "status", status)
	return true, status, nil
}

// ReadMemTotal returns MemTotal of a /proc/meminfo file, in bytes.
func ReadMemTotal(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%s: unexpected MemTotal line %q", path, sc.Text())
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemTotal: %w", path, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%s: no MemTotal", path)
}
