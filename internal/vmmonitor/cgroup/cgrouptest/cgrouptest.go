// Package cgrouptest holds the files of a cgroup v2 service's memory accounting, for the
// cgroup watcher's tests, benchmark and bench/watchercost: one sample, one place.
package cgrouptest

import (
	"os"
	"path/filepath"
)

// MemoryStat is the memory.stat of a cgroup v2 service (Linux 6.1), its keys in the
// kernel's order: active_anon + inactive_anon is 150 MiB.
const MemoryStat = `anon 157286400
file 524288000
kernel 8388608
kernel_stack 98304
pagetables 409600
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 134217728
zswap 0
zswapped 0
file_mapped 134217728
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 52428800
active_anon 104857600
inactive_file 262144000
active_file 262144000
unevictable 0
slab_reclaimable 1048576
slab_unreclaimable 524288
slab 1572864
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgsteal_kswapd 0
pgsteal_direct 0
pgfault 123456
pgmajfault 12
pgrefill 0
pgactivate 0
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
`

// MemoryEvents is a memory.events with every counter at zero.
const MemoryEvents = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"

// Write puts MemoryStat and MemoryEvents into dir, as a cgroup directory holds them.
func Write(dir string) error {
	for name, body := range map[string]string{"memory.stat": MemoryStat, "memory.events": MemoryEvents} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
