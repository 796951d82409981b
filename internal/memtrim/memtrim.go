// Package memtrim gives back the start-up pages of a long-running daemon whose steady
// working set is a small part of its binary.
//
// A Go daemon runs every package's initialisation, flag parsing, its first connections
// and the first pass of its periodic work once, and the kernel maps the binary's pages
// around each page fault (fault-around, 64 KiB by default), so after start-up most of a
// 14 MB static binary stays mapped into the process (about 10 MB of compute-monitor's
// resident set, bench/README.md) though its rounds use well under 2 MB of it (counted
// with /proc/PID/clear_refs and the smaps Referenced field).
//
// Trim unmaps the resident pages of the executable's read-only mappings with
// MADV_DONTNEED. The pages stay in the page cache, unmapped and so cheaper to reclaim;
// a page the process touches again is mapped again from the page cache, unchanged.
// That holds only for pages that were never written: a private mapping whose pages were
// modified (a position-independent build's relocated read-only data, or a breakpoint a
// debugger wrote) would be reset to the file's bytes. Trim therefore reads
// /proc/self/smaps and leaves alone every mapping that is writable, shared, or has a
// single anonymous (copied-on-write) page, and tells which it skipped.
//
// Unmapping alone does not keep the resident set down for long: a later fault maps,
// besides the page it needs, every neighbour within 64 KiB that is in the page cache
// (fault-around), and the whole binary is there (start-up read it, and a fault reads
// 128 KiB around the page it misses: read-around). So the rounds, which touch about
// 2 MB of the binary, brought back 8-9 MB of it. Trim therefore also sets MADV_RANDOM on
// the mappings it unmapped (a later fault reads only its page) and drops the
// executable's pages that no process maps from the page cache (POSIX_FADV_DONTNEED; an
// executable's pages are clean, so this only forgets them): what the process touches
// afterwards is what comes back, a page at a time, read from disk. The cost: those
// reads (a few hundred pages over the process's life; a code path first run after a trim,
// such as the vm-monitor's first downscale, waits for a few dozen single-page reads), and
// the same for another process running the same binary (compute-monitor and the
// vm-monitor share one, and each trims) when it next needs one of the dropped pages.
// MADV_RANDOM stays for the process's life. Where the executable is on tmpfs (the test
// containers' volatile root) its pages cannot be dropped, the call does nothing, and
// fault-around goes on mapping neighbours.
//
// The daemon chooses when to call it: once it has settled (its first rounds done), so
// that what start-up alone touched is what goes.
package memtrim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Result says what a trim did.
type Result struct {
	// Trimmed is the number of mappings given back, TrimmedKB their resident size before.
	Trimmed   int
	TrimmedKB int64
	// Skipped is the number of read-only mappings of the file left alone because some of
	// their pages were modified.
	Skipped int
	// CacheErr is why the executable's pages could not be dropped from the page cache
	// (nil when they were: see Trim).
	CacheErr error
}

// Trim gives back the resident pages of the running executable's unmodified read-only
// mappings.
func Trim() (Result, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Result{}, fmt.Errorf("find the executable: %w", err)
	}
	// The page cache is reached through /proc/self/exe: the running executable even
	// when its path now names another file (a package upgrade).
	return trimFile(exe, "/proc/self/exe")
}

// trimFile trims the unmodified read-only private mappings of path in this process and
// drops from the page cache the pages of file (path, or another name of it) that no
// process maps.
func trimFile(path, file string) (Result, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	maps, err := parseSmaps(f, path)
	f.Close()
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, m := range maps {
		if !m.trimmable() {
			if m.anonKB > 0 && !m.writable() {
				res.Skipped++
			}
			continue
		}
		if m.rssKB == 0 {
			continue
		}
		// Raw calls: the range is an address from smaps, not memory Go allocated.
		// MADV_RANDOM first: no fault from now on reads around its page.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_RANDOM); errno != 0 {
			return res, fmt.Errorf("madvise random %#x-%#x: %w", m.start, m.end, errno)
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return res, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		res.Trimmed++
		res.TrimmedKB += m.rssKB
	}
	if res.Trimmed > 0 {
		res.CacheErr = dropCache(file)
	}
	return res, nil
}

// dropCache drops path's pages that no process maps from the page cache.
func dropCache(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	return nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	perms      string
	rssKB      int64
	anonKB     int64
	// complete: the Rss and Anonymous fields were both seen.
	seenRss, seenAnon bool
}

func (m mapping) writable() bool { return len(m.perms) > 1 && m.perms[1] == 'w' }

// trimmable: read-only, private, and every page unmodified (known, not assumed).
func (m mapping) trimmable() bool {
	return len(m.perms) == 4 && m.perms[0] == 'r' && !m.writable() && m.perms[3] == 'p' &&
		m.seenRss && m.seenAnon && m.anonKB == 0
}

// parseSmaps returns the mappings of path in an smaps listing.
func parseSmaps(r io.Reader, path string) ([]mapping, error) {
	var out []mapping
	var cur *mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if start, end, perms, p, ok := header(line); ok {
			cur = nil
			if p == path {
				out = append(out, mapping{start: start, end: end, perms: perms})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch key {
		case "Rss", "Anonymous":
			kb, err := kilobytes(val)
			if err != nil {
				return nil, fmt.Errorf("read mappings: %s: %w", key, err)
			}
			if key == "Rss" {
				cur.rssKB, cur.seenRss = kb, true
			} else {
				cur.anonKB, cur.seenAnon = kb, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mappings: %w", err)
	}
	return out, nil
}

// header parses a mapping's first line: "start-end perms offset dev inode [path]". The
// path may contain spaces; field lines ("Rss:   12 kB") are not headers.
func header(line string) (start, end uintptr, perms, path string, ok bool) {
	fs := strings.Fields(line)
	if len(fs) < 5 || strings.HasSuffix(fs[0], ":") {
		return 0, 0, "", "", false
	}
	lo, hi, found := strings.Cut(fs[0], "-")
	if !found {
		return 0, 0, "", "", false
	}
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, "", "", false
	}
	if len(fs) > 5 {
		// The path starts after the inode field; keep its inner spacing.
		idx := 0
		for i := 0; i < 5; i++ {
			j := strings.Index(line[idx:], fs[i])
			idx += j + len(fs[i])
		}
		path = strings.TrimLeft(line[idx:], " ")
	}
	return uintptr(a), uintptr(b), fs[1], path, true
}

func kilobytes(v string) (int64, error) {
	fs := strings.Fields(v)
	if len(fs) != 2 || fs[1] != "kB" {
		return 0, errors.New("not a size in kB: " + strings.TrimSpace(v))
	}
	return strconv.ParseInt(fs[0], 10, 64)
}

// ResidentKB returns this process's resident set (VmRSS) in kB, 0 when unknown.
func ResidentKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := kilobytes(v)
			if err == nil {
				return kb
			}
		}
	}
	return 0
}

// TrimLogged trims (Trim) and logs what it did, with the resident set before and after.
func TrimLogged(log *slog.Logger) {
	before := ResidentKB()
	r, err := Trim()
	if err != nil {
		log.Warn("could not give back the binary's start-up pages", "err", err)
		return
	}
	log.Info("gave back the binary's start-up pages", "mappings", r.Trimmed, "trimmed_kb", r.TrimmedKB,
		"skipped_modified", r.Skipped, "rss_before_kb", before, "rss_after_kb", ResidentKB())
	if r.CacheErr != nil {
		log.Warn("could not drop the binary's pages from the page cache: later faults map their neighbours too", "err", r.CacheErr)
	}
}
