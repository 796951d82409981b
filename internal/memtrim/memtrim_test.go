package memtrim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestParseSmaps(t *testing.T) {
	const exe = "/usr/bin/compute monitor"
	in := strings.Join([]string{
		"00400000-009eb000 r-xp 00000000 fe:00 9986093                            /usr/bin/compute monitor",
		"Size:               6060 kB",
		"Rss:                4652 kB",
		"Anonymous:             0 kB",
		"VmFlags: rd ex mr mw me",
		"009eb000-010b4000 r--p 005eb000 fe:00 9986093                            /usr/bin/compute monitor",
		"Rss:                4364 kB",
		"Anonymous:            12 kB",
		"010b4000-0113e000 rw-p 00cb4000 fe:00 9986093                            /usr/bin/compute monitor",
		"Rss:                 372 kB",
		"Anonymous:            88 kB",
		"01200000-01300000 r--p 00cb4000 fe:00 9986093                            /usr/bin/compute monitor",
		"Rss:                 100 kB",
		"7fe3a2d1b000-7fe3a2e71000 r-xp 00026000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6",
		"Rss:                1288 kB",
		"Anonymous:             0 kB",
		"473a9000000-473a9400000 rw-p 00000000 00:00 0",
		"Rss:                 988 kB",
		"Anonymous:           988 kB",
	}, "\n")
	maps, err := parseSmaps(strings.NewReader(in), exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 4 {
		t.Fatalf("got %d mappings of %q, want 4: %+v", len(maps), exe, maps)
	}
	want := []struct {
		start     uintptr
		rss, anon int64
		trimmable bool
	}{
		{0x400000, 4652, 0, true},
		{0x9eb000, 4364, 12, false}, // modified pages: never
		{0x10b4000, 372, 88, false}, // writable: never
		{0x1200000, 100, 0, false},  // no Anonymous field: not known to be clean
	}
	for i, w := range want {
		m := maps[i]
		if m.start != w.start || m.rssKB != w.rss || m.anonKB != w.anon || m.trimmable() != w.trimmable {
			t.Errorf("mapping %d: %+v trimmable=%v, want start %#x rss %d anon %d trimmable %v", i, m, m.trimmable(), w.start, w.rss, w.anon, w.trimmable)
		}
	}
	if _, err := parseSmaps(strings.NewReader("00400000-009eb000 r-xp 00000000 fe:00 1 /x\nRss: lots\n"), "/x"); err == nil {
		t.Error("a malformed size was accepted")
	}
}

var sink byte

// mapFile maps path privately and reads every page, so that all of it is resident.
func mapFile(t *testing.T, path string, prot int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if prot&unix.PROT_WRITE != 0 {
		f.Close()
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), prot, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	var sum byte
	for i := 0; i < len(b); i += os.Getpagesize() {
		sum += b[i]
	}
	sink += sum
	return b
}

func residentKB(t *testing.T, path string) (rss, anon int64) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := parseSmaps(f, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) == 0 {
		t.Fatalf("%s is not mapped", path)
	}
	for _, m := range maps {
		rss += m.rssKB
		anon += m.anonKB
	}
	return rss, anon
}

func testFile(t *testing.T) (string, []byte) {
	t.Helper()
	content := bytes.Repeat([]byte("compute-tools memtrim "), 48<<10) // ~1 MB
	path := filepath.Join(t.TempDir(), "mapped file")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, content
}

// An unmodified read-only mapping is given back, and reads the file's bytes afterwards.
func TestTrimUnmodified(t *testing.T) {
	path, content := testFile(t)
	b := mapFile(t, path, unix.PROT_READ)
	if rss, _ := residentKB(t, path); rss < 512 {
		t.Fatalf("only %d kB of the 1 MB mapping are resident before the trim", rss)
	}
	res, err := trimFile(path, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trimmed != 1 || res.Skipped != 0 || res.TrimmedKB < 512 {
		t.Errorf("result %+v, want one mapping of at least 512 kB trimmed", res)
	}
	if rss, _ := residentKB(t, path); rss != 0 {
		t.Errorf("%d kB still resident after the trim", rss)
	}
	if !bytes.Equal(b, content) {
		t.Error("the mapping does not read the file's bytes after the trim")
	}
}

// A read-only mapping with a modified page (as a position-independent build's relocated
// data) is left alone: MADV_DONTNEED would reset it to the file's bytes.
func TestTrimSkipsModified(t *testing.T) {
	path, content := testFile(t)
	b := mapFile(t, path, unix.PROT_READ|unix.PROT_WRITE)
	b[4096] = '!'
	if err := unix.Mprotect(b, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if _, anon := residentKB(t, path); anon == 0 {
		t.Fatal("the written page is not anonymous: the test cannot tell a skip from a trim")
	}
	res, err := trimFile(path, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trimmed != 0 || res.Skipped != 1 {
		t.Errorf("result %+v, want the modified mapping skipped", res)
	}
	if b[4096] != '!' {
		t.Error("the modified page was reset to the file's bytes")
	}
	if !bytes.Equal(b[:4096], content[:4096]) {
		t.Error("the unmodified part changed")
	}
}

// The test binary trims itself and goes on running.
func TestTrimSelf(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := residentKB(t, exe)
	res, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	if res.Trimmed == 0 {
		t.Fatalf("nothing trimmed (%+v) of %d kB resident", res, before)
	}
	after, _ := residentKB(t, exe)
	if after >= before {
		t.Errorf("resident pages of the binary: %d kB before, %d kB after", before, after)
	}
	t.Logf("binary resident %d kB -> %d kB (%+v)", before, after, res)
}

// After a trim, the pages the process did not keep are out of the page cache, so a
// fault maps the page it needs and not its 64 KiB of neighbours (fault-around): the
// resident set grows by what is touched. Needs the file on a disk file system (tmpfs
// pages are the file: they cannot be dropped).
func TestTrimDropsCache(t *testing.T) {
	path, content := testFile(t)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs: its pages cannot be dropped from the page cache", filepath.Dir(path))
	}
	// Written back first, as an installed executable is: dirty pages cannot be dropped.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := mapFile(t, path, unix.PROT_READ)
	res, err := trimFile(path, path)
	if err != nil || res.Trimmed != 1 || res.CacheErr != nil {
		t.Fatalf("trim = %+v, %v", res, err)
	}
	if n := cached(t, b); n > 0 {
		t.Errorf("%d of the file's %d pages still in the page cache after the trim", n, len(b)/os.Getpagesize())
	}
	// One page in the middle: it alone comes back (no read-around, nothing cached to map
	// around it).
	mid := len(b) / 2 / os.Getpagesize() * os.Getpagesize()
	if !bytes.Equal(b[mid:mid+16], content[mid:mid+16]) {
		t.Fatal("the mapping does not read the file's bytes after the trim")
	}
	if rss, _ := residentKB(t, path); rss > 16 {
		t.Errorf("%d kB resident after touching one page, want at most 16 kB (not the 64 kB of fault-around)", rss)
	}
}

// cached counts the pages of the mapping b that are in the page cache.
func cached(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal("mincore:", e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
