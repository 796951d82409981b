package policy

import (
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/sizing"
)

const (
	MiB = sizing.MiB
	GiB = 1 << 30
)

// The figures of a 2 GiB target, by hand (see also sizing's tests):
//
//	usable    = 2048 MiB - 100 MiB = 1948 MiB = 2042626048
//	threshold = trunc(2042626048 * 0.85) = trunc(1736232140.8) = 1736232140 (1655.8 MiB)
//	cache     = min((1948 - 256) / 1.1 = 1538.2 MiB, 0.75 * 1948 = 1461 MiB) = 1461 MiB
const (
	usable2G    = 2042626048
	threshold2G = 1736232140
	cache2G     = 1461 * MiB
)

func TestSizes(t *testing.T) {
	r := DefaultRules()
	at := DefaultRules()
	at.MemoryHighAtThreshold = true
	for _, tt := range []struct {
		name string
		got  Sizes
		want Sizes
	}{
		{"2 GiB allocation", r.ForAllocation(2 * GiB), Sizes{Total: usable2G, Cache: cache2G, Threshold: threshold2G, MemoryHigh: usable2G}},
		{"2 GiB allocation, MemoryHigh at the threshold", at.ForAllocation(2 * GiB), Sizes{Total: usable2G, Cache: cache2G, Threshold: threshold2G, MemoryHigh: threshold2G}},
		// 4 GiB: usable 3996 MiB = 4190109696; threshold trunc(3561593241.6);
		// cache 0.75 * 3996 = 2997 MiB.
		{"4 GiB allocation", r.ForAllocation(4 * GiB), Sizes{Total: 4190109696, Cache: 2997 * MiB, Threshold: 3561593241, MemoryHigh: 4190109696}},
		// 300 MiB: usable 200 MiB, below the 256 MiB the cache leaves: no cache;
		// threshold 200 MiB * 0.85 = 170 MiB = 178257920 exactly.
		{"300 MiB allocation", r.ForAllocation(300 * MiB), Sizes{Total: 200 * MiB, Cache: 0, Threshold: 178257920, MemoryHigh: 200 * MiB}},
		// Less than the sys buffer: everything 0.
		{"50 MiB allocation", r.ForAllocation(50 * MiB), Sizes{}},
		// At start, MemTotal as it is (no sys buffer): 4028476 kB = 4125159424 bytes;
		// threshold trunc(4125159424 * 0.85 = 3506385510.4) = 3506385510;
		// cache min((4125159424 - 268435456) / 1.1 = 3506112698.2, 0.75 * 4125159424 =
		// 3093869568 = 2950.55 MiB) -> 2950 MiB.
		{"MemTotal at start", r.ForMemTotal(4125159424), Sizes{Total: 4125159424, Cache: 2950 * MiB, Threshold: 3506385510, MemoryHigh: 4125159424}},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
}

func TestDecideDownscale(t *testing.T) {
	r := DefaultRules()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sz2G := Sizes{Total: usable2G, Cache: cache2G, Threshold: threshold2G, MemoryHigh: usable2G}
	fresh := now.Add(-100 * time.Millisecond)
	for _, tt := range []struct {
		name string
		in   DownscaleInput
		want DownscaleDecision
	}{
		{"nothing managed",
			DownscaleInput{TargetMem: 2 * GiB, Now: now},
			DownscaleDecision{Verdict: Approve, Status: "monitor is not managing cgroup or file cache", NothingManaged: true}},
		{"nothing managed, stale stats do not matter",
			DownscaleInput{TargetMem: 2 * GiB, Now: now, StatsAt: now.Add(-time.Hour)},
			DownscaleDecision{Verdict: Approve, Status: "monitor is not managing cgroup or file cache", NothingManaged: true}},
		{"stale: last sample 5 s + 1 ns ago",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Cache: true, Now: now, StatsAt: now.Add(-5*time.Second - 1), Samples: 5, AvgNonReclaimable: 100 * MiB},
			DownscaleDecision{Verdict: Fail, Err: "haven't gotten cgroup memory stats recently enough to determine downscaling information"}},
		{"stale before enough samples: no samples for more than 5 s is a failure, not a denial",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Now: now, StatsAt: now.Add(-6 * time.Second)},
			DownscaleDecision{Verdict: Fail, Err: "haven't gotten cgroup memory stats recently enough to determine downscaling information"}},
		{"exactly 5 s old is not stale",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Now: now, StatsAt: now.Add(-5 * time.Second), Samples: 5, AvgNonReclaimable: 100 * MiB},
			DownscaleDecision{Verdict: Approve, Sizes: sz2G}},
		{"no samples yet (watcher just started)",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Cache: true, Now: now, StatsAt: now.Add(-time.Second)},
			DownscaleDecision{Verdict: Deny, Status: "haven't received enough cgroup memory stats yet", Sizes: sz2G}},
		{"one sample",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Now: now, StatsAt: fresh, Samples: 1},
			DownscaleDecision{Verdict: Deny, Status: "haven't received enough cgroup memory stats yet", Sizes: sz2G}},
		// 1655.8 MiB < 1600 + 100 MiB
		{"threshold too low",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Cache: true, Now: now, StatsAt: fresh, Samples: 5, AvgNonReclaimable: 1600 * MiB},
			DownscaleDecision{Verdict: Deny, Sizes: sz2G,
				Status: "calculated memory threshold too low: 1655.8 MiB (new threshold) < 1600 (current usage) + 100 (downscale buffer)"}},
		// 1736232140 - 104857600 = 1631374540 = 1555.8 MiB leaves exactly the buffer.
		{"exactly the buffer left",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Now: now, StatsAt: fresh, Samples: 2, AvgNonReclaimable: threshold2G - 100*MiB},
			DownscaleDecision{Verdict: Approve, Sizes: sz2G}},
		// One byte more: denied; float32 MiB figures: 1631374541 B = 1555.8 MiB.
		{"a byte less than the buffer left",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Now: now, StatsAt: fresh, Samples: 2, AvgNonReclaimable: threshold2G - 100*MiB + 1},
			DownscaleDecision{Verdict: Deny, Sizes: sz2G,
				Status: "calculated memory threshold too low: 1655.8 MiB (new threshold) < 1555.8 (current usage) + 100 (downscale buffer)"}},
		{"approved",
			DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Cache: true, Now: now, StatsAt: fresh, Samples: 5, AvgNonReclaimable: 1500 * MiB},
			DownscaleDecision{Verdict: Approve, Sizes: sz2G}},
		// Only the file cache: no statistics are looked at (the reference checks them
		// only with a cgroup).
		{"file cache only: approved without statistics",
			DownscaleInput{TargetMem: 2 * GiB, Cache: true, Now: now},
			DownscaleDecision{Verdict: Approve, Sizes: sz2G}},
		// A target below the sys buffer: threshold 0 < usage + buffer.
		{"target smaller than the sys buffer",
			DownscaleInput{TargetMem: 50 * MiB, Cgroup: true, Now: now, StatsAt: fresh, Samples: 5, AvgNonReclaimable: 0},
			DownscaleDecision{Verdict: Deny, Sizes: Sizes{},
				Status: "calculated memory threshold too low: 0 MiB (new threshold) < 0 (current usage) + 100 (downscale buffer)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.DecideDownscale(tt.in); got != tt.want {
				t.Errorf("DecideDownscale(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestApprovedStatus(t *testing.T) {
	sz := Sizes{Total: usable2G, Cache: cache2G, Threshold: threshold2G, MemoryHigh: usable2G}
	for _, tt := range []struct {
		name string
		a    Applied
		want string
	}{
		// The old threshold of a 4 GiB grant: 3561593241 B = 3396.6 MiB.
		{"cache and cgroup", Applied{Cache: true, CacheSet: true, CacheBytes: cache2G, Cgroup: true, OldThreshold: 3561593241},
			"set file cache size to 1461 MiB; set cgroup memory threshold from 3396.6 MiB to 1655.8 MiB, of new total 1948 MiB"},
		{"cache capped by the maximum", Applied{Cache: true, CacheSet: true, CacheBytes: 1024 * MiB},
			"set file cache size to 1024 MiB"},
		{"cgroup only", Applied{Cgroup: true, OldThreshold: 3561593241},
			"set cgroup memory threshold from 3396.6 MiB to 1655.8 MiB, of new total 1948 MiB"},
		{"cache unknown to the server", Applied{Cache: true, CacheReason: "neon.file_cache_size_limit is not a setting of this server (no neon extension)", Cgroup: true, OldThreshold: threshold2G},
			"file cache not resized: neon.file_cache_size_limit is not a setting of this server (no neon extension); set cgroup memory threshold from 1655.8 MiB to 1655.8 MiB, of new total 1948 MiB"},
		{"first threshold (none before)", Applied{Cgroup: true},
			"set cgroup memory threshold from 0 MiB to 1655.8 MiB, of new total 1948 MiB"},
	} {
		if got := ApprovedStatus(sz, tt.a); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

// BenchmarkDecideDownscale is the decision alone, without its side effects.
func BenchmarkDecideDownscale(b *testing.B) {
	r := DefaultRules()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	in := DownscaleInput{TargetMem: 2 * GiB, Cgroup: true, Cache: true, Now: now, StatsAt: now.Add(-50 * time.Millisecond), Samples: 5, AvgNonReclaimable: 1600 * MiB}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r.DecideDownscale(in).Verdict != Deny {
			b.Fatal("not denied")
		}
	}
}
