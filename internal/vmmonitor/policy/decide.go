package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/sizing"
)

// Rules are the numbers the decisions use.
type Rules struct {
	Sizing    sizing.Config
	FileCache sizing.FileCache
	// StaleAfter: cgroup statistics older than this make a downscale request fail (5 s).
	StaleAfter time.Duration
	// MemoryHighAtThreshold puts MemoryHigh= at the threshold instead of at the usable
	// memory (see the package comment).
	MemoryHighAtThreshold bool
}

// DefaultRules are the reference's numbers, MemoryHigh at the usable memory.
func DefaultRules() Rules {
	return Rules{Sizing: sizing.Default(), FileCache: sizing.DefaultFileCache(), StaleAfter: 5 * time.Second}
}

// Sizes are what a memory size means for the cache, the threshold and MemoryHigh.
type Sizes struct {
	// Total is the memory the others are computed from: the usable memory of an
	// allocation, or MemTotal at start.
	Total uint64
	// Cache is the LFC size before the neon.max_file_cache_size cap.
	Cache uint64
	// Threshold is the cgroup memory threshold.
	Threshold uint64
	// MemoryHigh is the MemoryHigh= of the Postgres unit.
	MemoryHigh uint64
}

// sizesFor computes the sizes for total bytes of memory.
func (r Rules) sizesFor(total uint64) Sizes {
	s := Sizes{Total: total, Cache: r.FileCache.Size(total), Threshold: r.Sizing.Threshold(total), MemoryHigh: total}
	if r.MemoryHighAtThreshold {
		s.MemoryHigh = s.Threshold
	}
	return s
}

// ForAllocation computes the sizes for an allocation's memory (granted or target): from
// its usable memory, mem minus the sys buffer.
func (r Rules) ForAllocation(mem uint64) Sizes { return r.sizesFor(r.Sizing.Usable(mem)) }

// ForMemTotal computes the sizes at start, from the kernel's MemTotal, which has the
// kernel's share taken off already (the reference uses it as it is).
func (r Rules) ForMemTotal(memTotal uint64) Sizes { return r.sizesFor(memTotal) }

// Verdict is the kind of answer to a downscale request.
type Verdict int

const (
	// Approve: do it, answer Ok: true.
	Approve Verdict = iota
	// Deny: answer Ok: false with the status; a denial is an answer, not an error.
	Deny
	// Fail: answer with an internal error.
	Fail
)

func (v Verdict) String() string {
	switch v {
	case Approve:
		return "approve"
	case Deny:
		return "deny"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Status texts of the reference (runner.rs), which reach the agent.
const (
	StatusNotManaging   = "monitor is not managing cgroup or file cache"
	StatusNotEnoughData = "haven't received enough cgroup memory stats yet"
	// ErrStale is the error text of a downscale request with stale statistics.
	ErrStale = "haven't gotten cgroup memory stats recently enough to determine downscaling information"
)

// DownscaleInput is what a downscale decision looks at.
type DownscaleInput struct {
	// TargetMem is the memory the agent wants to scale down to (bytes).
	TargetMem uint64
	// Cgroup and Cache say what the monitor manages.
	Cgroup, Cache bool
	// Now, and the watcher's latest snapshot: when it was taken (the watcher's start
	// before any), how many samples it averages, and the average.
	Now               time.Time
	StatsAt           time.Time
	Samples           int
	AvgNonReclaimable uint64
}

// DownscaleDecision is the outcome.
type DownscaleDecision struct {
	Verdict Verdict
	// Status is the reason of a Deny, or the answer of an Approve with nothing managed.
	Status string
	// Err is the error text of a Fail.
	Err string
	// Sizes for the target (valid unless Fail or nothing managed).
	Sizes Sizes
	// NothingManaged: approve at once, nothing to change.
	NothingManaged bool
}

// DecideDownscale applies the reference's rules, in its order: nothing managed ->
// approve; (with a cgroup) statistics older than StaleAfter -> fail; at most one sample
// -> deny; the new threshold below the average usage plus the downscale buffer -> deny
// with the figures; else approve, with the sizes to set.
func (r Rules) DecideDownscale(in DownscaleInput) DownscaleDecision {
	if !in.Cgroup && !in.Cache {
		return DownscaleDecision{Verdict: Approve, Status: StatusNotManaging, NothingManaged: true}
	}
	sz := r.ForAllocation(in.TargetMem)
	if in.Cgroup {
		// The order matters (the reference's comment): at start too few samples deny,
		// but no samples at all for a while (or none lately) is a failure.
		if in.Now.Sub(in.StatsAt) > r.StaleAfter {
			return DownscaleDecision{Verdict: Fail, Err: ErrStale}
		}
		if in.Samples <= 1 {
			return DownscaleDecision{Verdict: Deny, Status: StatusNotEnoughData, Sizes: sz}
		}
		if r.Sizing.ThresholdTooLow(sz.Threshold, in.AvgNonReclaimable) {
			return DownscaleDecision{Verdict: Deny, Sizes: sz, Status: fmt.Sprintf(
				"calculated memory threshold too low: %s MiB (new threshold) < %s (current usage) + %s (downscale buffer)",
				sizing.MiBString(sz.Threshold), sizing.MiBString(in.AvgNonReclaimable), sizing.MiBString(r.Sizing.DownscaleBufferBytes))}
		}
	}
	return DownscaleDecision{Verdict: Approve, Sizes: sz}
}

// Applied is what an approved downscale did, for its status text.
type Applied struct {
	// Cache: the file cache was handled; CacheSet: resized to CacheBytes, or else not
	// resized for CacheReason.
	Cache       bool
	CacheSet    bool
	CacheBytes  uint64
	CacheReason string
	// Cgroup: the threshold moved from OldThreshold to the decision's threshold.
	Cgroup       bool
	OldThreshold uint64
}

// ApprovedStatus is the status text of an approved downscale: the reference's parts,
// joined with "; ".
func ApprovedStatus(sz Sizes, a Applied) string {
	var parts []string
	if a.Cache {
		if a.CacheSet {
			parts = append(parts, fmt.Sprintf("set file cache size to %s MiB", sizing.MiBString(a.CacheBytes)))
		} else {
			parts = append(parts, "file cache not resized: "+a.CacheReason)
		}
	}
	if a.Cgroup {
		parts = append(parts, fmt.Sprintf("set cgroup memory threshold from %s MiB to %s MiB, of new total %s MiB",
			sizing.MiBString(a.OldThreshold), sizing.MiBString(sz.Threshold), sizing.MiBString(sz.Total)))
	}
	return strings.Join(parts, "; ")
}
