// Package sizing is the vm-monitor's arithmetic, pure: the memory threshold above which
// the vm-monitor asks the autoscaler agent for more memory, the usable memory of an
// allocation, the size of Neon's local file cache (LFC) for a memory size, and the MiB
// figures of the status texts. Nothing here reads a file, the clock or Postgres.
//
// The constants and formulas are those of Neon's libs/vm_monitor (runner.rs Config,
// filecache.rs FileCacheConfig, lib.rs bytes_to_mebibytes), computed with the same
// float64 operations in the same order, so that the results agree to the byte:
//
//   - usable memory of an allocation = mem - sys_buffer (100 MiB), at least 0;
//   - threshold(total) = trunc(total * (1 - 0.15)), where total is the usable memory of
//     the allocation granted or targeted (UpscaleNotification, DownscaleRequest) or, at
//     start, the machine's MemTotal as it is (the kernel has taken its share already);
//   - a downscale is denied when threshold(usable target) < average anon usage +
//     downscale buffer (100 MiB);
//   - LFC size(total) = 0 when total <= 256 MiB, else
//     min(trunc((total - 256 MiB) / (1 + 0.1)), trunc(total * 0.75)) rounded down to a
//     whole MiB; the caller caps it by neon.max_file_cache_size (CapMiB).
//
// MiBString formats bytes the way the reference's texts do (a float32 count of MiB,
// printed with the fewest digits that read back as the same float32), because those
// texts reach the agent in DownscaleResult.Status.
package sizing

import (
	"errors"
	"fmt"
	"strconv"
)

// MiB is 2^20 bytes.
const MiB uint64 = 1 << 20

// Config holds the memory threshold parameters (the reference's runner Config).
type Config struct {
	// SysBufferBytes is taken off an allocation's memory before anything is computed
	// from it: the kernel's share, the difference between the memory the agent grants
	// and what MemTotal will show. Must not be 0.
	SysBufferBytes uint64
	// MinOverheadFraction is the share of memory always left above the threshold: 0.15
	// means upscale requests are sent once the cgroup's anonymous memory reaches 85%.
	MinOverheadFraction float64
	// DownscaleBufferBytes must remain between the current usage and the threshold a
	// downscale would set, or the downscale is denied.
	DownscaleBufferBytes uint64
}

// Default returns the reference's values: 100 MiB, 0.15, 100 MiB.
func Default() Config {
	return Config{SysBufferBytes: 100 * MiB, MinOverheadFraction: 0.15, DownscaleBufferBytes: 100 * MiB}
}

// Validate reports a configuration the formulas cannot work with.
func (c Config) Validate() error {
	if c.SysBufferBytes == 0 {
		return errors.New("sizing: sys_buffer_bytes cannot be 0")
	}
	if !(c.MinOverheadFraction >= 0 && c.MinOverheadFraction < 1) {
		return fmt.Errorf("sizing: min overhead fraction must be in [0, 1), got %v", c.MinOverheadFraction)
	}
	return nil
}

// Usable is mem minus the sys buffer, 0 when mem is smaller.
func (c Config) Usable(mem uint64) uint64 {
	if mem < c.SysBufferBytes {
		return 0
	}
	return mem - c.SysBufferBytes
}

// Threshold is the anonymous memory above which upscaling is wanted, for total bytes of
// memory: total * (1 - MinOverheadFraction), truncated.
func (c Config) Threshold(total uint64) uint64 {
	return uint64(float64(total) * (1.0 - c.MinOverheadFraction))
}

// ThresholdTooLow reports whether a threshold leaves less than the downscale buffer
// above the current average usage.
func (c Config) ThresholdTooLow(threshold, avgUsage uint64) bool {
	return threshold < avgUsage+c.DownscaleBufferBytes
}

// FileCache holds the LFC sizing parameters (the reference's FileCacheConfig).
type FileCache struct {
	// ResourceMultiplier is the share of memory the cache may take at most (0.75),
	// strictly between 0 and 1.
	ResourceMultiplier float64
	// MinRemainingAfterCache is the memory always left to the rest of the system
	// (256 MiB); not 0.
	MinRemainingAfterCache uint64
	// SpreadFactor slows the cache's growth from 0 at MinRemainingAfterCache: for each
	// byte the cache gets, SpreadFactor bytes stay with the system, until the
	// ResourceMultiplier line is reached (0.1).
	SpreadFactor float64
}

// DefaultFileCache returns the reference's values: 0.75, 256 MiB, 0.1.
func DefaultFileCache() FileCache {
	return FileCache{ResourceMultiplier: 0.75, MinRemainingAfterCache: 256 * MiB, SpreadFactor: 0.1}
}

// Validate reports parameters that are invalid alone or together (the reference's
// FileCacheConfig::validate): the two lines must meet, which needs
// ResourceMultiplier * (SpreadFactor + 1) < 1.
func (f FileCache) Validate() error {
	if !(f.ResourceMultiplier > 0 && f.ResourceMultiplier < 1) {
		return fmt.Errorf("sizing: resource_multiplier must be between 0.0 and 1.0 exclusive, got %v", f.ResourceMultiplier)
	}
	if !(f.SpreadFactor >= 0) {
		return fmt.Errorf("sizing: spread_factor must be >= 0, got %v", f.SpreadFactor)
	}
	if f.MinRemainingAfterCache == 0 {
		return errors.New("sizing: min_remaining_after_cache must not be 0")
	}
	if f.ResourceMultiplier*(f.SpreadFactor+1.0) >= 1.0 {
		return errors.New("sizing: incompatible resource_multiplier and spread_factor")
	}
	return nil
}

// Size is the LFC size in bytes, a whole number of MiB, for total bytes of memory.
func (f FileCache) Size(total uint64) uint64 {
	if total <= f.MinRemainingAfterCache {
		return 0
	}
	available := total - f.MinRemainingAfterCache
	fromSpread := uint64(max(0, int64(float64(available)/(1.0+f.SpreadFactor))))
	fromNormal := uint64(float64(total) * f.ResourceMultiplier)
	return min(fromSpread, fromNormal) / MiB * MiB
}

// CapMiB caps size by maxBytes (neon.max_file_cache_size) and returns it in whole MiB,
// rounded down, and whether the cap applied.
func CapMiB(size, maxBytes uint64) (mib uint64, capped bool) {
	return min(size, maxBytes) / MiB, size > maxBytes
}

// MiBString formats bytes as a count of MiB the way the reference's status texts do:
// bytes converted to float32, divided by 2^20, printed in the shortest decimal form that
// reads back as the same float32 ("1024", "870.4").
func MiBString(bytes uint64) string {
	return strconv.FormatFloat(float64(float32(bytes)/float32(MiB)), 'f', -1, 32)
}
