package cgroup

import (
	"bytes"
	"fmt"
	"io/fs"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ParseMemoryStat returns the non-reclaimable memory of a cgroup v2 memory.stat:
// active_anon + inactive_anon, in bytes, as the reference counts it. Both keys must be
// present.
func ParseMemoryStat(b []byte) (uint64, error) {
	var active, inactive uint64
	var haveActive, haveInactive bool
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "active_anon":
			dst, haveActive = &active, true
		case "inactive_anon":
			dst, haveInactive = &inactive, true
		default:
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("memory.stat: %s: %w", key, err)
		}
		*dst = n
	}
	if !haveActive || !haveInactive {
		return 0, fmt.Errorf("memory.stat: no active_anon and inactive_anon (not a cgroup v2 memory controller?)")
	}
	return active + inactive, nil
}

// Events are the counters of a cgroup v2 memory.events file: how often the cgroup went
// over memory.low (low), was throttled over memory.high (high), reached memory.max
// (max), failed to allocate at memory.max (oom) and had a process killed by the OOM
// killer (oom_kill).
type Events struct {
	Low, High, Max, OOM, OOMKill uint64
}

// ParseMemoryEvents parses memory.events; keys it does not know are skipped, missing
// keys are 0.
func ParseMemoryEvents(b []byte) (Events, error) {
	var e Events
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "low":
			dst = &e.Low
		case "high":
			dst = &e.High
		case "max":
			dst = &e.Max
		case "oom":
			dst = &e.OOM
		case "oom_kill":
			dst = &e.OOMKill
		default:
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 64)
		if err != nil {
			return Events{}, fmt.Errorf("memory.events: %s: %w", key, err)
		}
		*dst = n
	}
	return e, nil
}

// errRemoved is the error of a read from a cgroup that was removed while its file was
// open: the kernel answers ENODEV; callers see a file that does not exist any more.
var errRemoved = fmt.Errorf("cgroup removed: %w", fs.ErrNotExist)

// cgFile reads one small file of a cgroup again and again (memory.stat ten times a
// second). On a cgroup file system it keeps the file open and reads it with pread at
// offset 0, where the kernel generates the text anew: one system call a sample instead
// of four (open, read, a read to see the end, close), which on a VM is most of what a
// sample costs after the wake-up. A read that fills the buffer is repeated with a larger
// one, so the text is always whole. Elsewhere (a directory of regular files, as in the
// tests) it opens the file at every read, so a file replaced or removed there is seen
// at once. Not safe for concurrent use.
type cgFile struct {
	path string
	fd   int // the open file on a cgroup file system; -1 when none
	buf  []byte
}

func newCGFile(path string, buf []byte) *cgFile { return &cgFile{path: path, fd: -1, buf: buf} }

// read returns the file's current text, valid until the next read. A cgroup removed
// since the file was opened reads as errRemoved (fs.ErrNotExist).
func (f *cgFile) read() ([]byte, error) {
	fd := f.fd
	if fd < 0 {
		var err error
		fd, err = unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: f.path, Err: err}
		}
		if onCgroupFS(fd) {
			f.fd = fd
		} else {
			defer unix.Close(fd)
		}
	}
	if cap(f.buf) == 0 {
		f.buf = make([]byte, 0, 8192)
	}
	for {
		n, err := f.pread(fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if fd == f.fd {
				f.close()
			}
			if err == unix.ENODEV {
				return nil, &fs.PathError{Op: "read", Path: f.path, Err: errRemoved}
			}
			return nil, &fs.PathError{Op: "read", Path: f.path, Err: err}
		}
		if n < cap(f.buf) {
			f.buf = f.buf[:n]
			return f.buf, nil
		}
		f.buf = make([]byte, 0, 2*cap(f.buf))
	}
}

// pread reads the file from offset 0 into the whole of f.buf's capacity. The file kept
// open on a cgroup file system is read with a raw system call: the runtime's ordinary
// path (entersyscall) wakes its sysmon thread when it sleeps, a second thread's wake-up
// for each sample, which on a VM costs about as much as the read (bench/README.md: the
// watcher at 0.13-0.15% of a core with it, 0.18-0.19% without). The price: the call keeps
// this goroutine's processor while the kernel generates the text, and that may sleep
// (the kernel allocates the text's buffer, which can reclaim memory under pressure, and
// flushes the per-CPU statistics first), so with GOMAXPROCS=1, as the unit runs, the
// vm-monitor's other goroutines (the agent's connection) and a garbage collection's
// stop wait for as long as the read takes, which is what the reference's blocking read
// does to its executor's thread too. A timerfd, a regular file, or anything not kept
// open is read the ordinary way.
func (f *cgFile) pread(fd int) (int, error) {
	b := f.buf[:cap(f.buf)]
	if fd != f.fd {
		return unix.Pread(fd, b, 0)
	}
	n, _, e := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// reset closes the file kept open and makes path the file to read, keeping the buffer.
func (f *cgFile) reset(path string) {
	f.close()
	f.path = path
}

// close closes the file kept open, if any.
func (f *cgFile) close() {
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
}

// onCgroupFS tells whether fd is a file of a cgroup file system (v2, or v1 where a
// measurement reads a v1 memory.stat), whose files regenerate at each read from 0.
func onCgroupFS(fd int) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC || st.Type == unix.CGROUP_SUPER_MAGIC
}
