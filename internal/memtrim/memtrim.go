// Package memtrim shrinks the resident set of a long-running daemon whose working set is
// small next to its binary. The kernel maps the pages of an executable around each page
// fault (fault-around, and the page cache's large folios), so a Go daemon that touched
// its code once at start-up keeps most of a 14 MB binary mapped (10 of compute-monitor's
// 13 MB resident, bench/README.md) though its rounds run a small part of it.
// TrimExecutable unmaps the executable's read-only pages (MADV_DONTNEED: they stay in the
// page cache, and a page touched again is mapped again from it, unchanged: read-only
// pages of a file were never modified) and marks those mappings MADV_RANDOM, which turns
// fault-around and read-ahead off for them, so that from then on only the pages the
// process uses are mapped. Writable mappings (the data segment) are never touched.
package memtrim

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Result says what TrimExecutable did.
type Result struct {
	Mappings int   // read-only mappings of the executable trimmed
	Bytes    int64 // their size (mapped, not necessarily resident before)
}

// TrimExecutable trims the read-only mappings of the running executable.
func TrimExecutable() (Result, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Result{}, fmt.Errorf("find the executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	defer f.Close()
	var res Result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := readOnlyMapping(sc.Text(), exe)
		if !ok {
			continue
		}
		if err := advise(start, end); err != nil {
			return res, err
		}
		res.Mappings++
		res.Bytes += int64(end - start)
	}
	if err := sc.Err(); err != nil {
		return res, fmt.Errorf("read mappings: %w", err)
	}
	return res, nil
}

// readOnlyMapping parses one line of /proc/self/maps ("start-end perms offset dev inode
// path") and returns the range of a mapping of path that is not writable.
func readOnlyMapping(line, path string) (start, end uintptr, ok bool) {
	fs := strings.Fields(line)
	if len(fs) < 6 || strings.Join(fs[5:], " ") != path || strings.Contains(fs[1], "w") {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(fs[0], "-")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}

func advise(start, end uintptr) error {
	for _, a := range []struct {
		advice int
		name   string
	}{{unix.MADV_RANDOM, "MADV_RANDOM"}, {unix.MADV_DONTNEED, "MADV_DONTNEED"}} {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, uintptr(a.advice)); errno != 0 {
			return fmt.Errorf("madvise %s %#x-%#x: %w", a.name, start, end, errno)
		}
	}
	return nil
}
