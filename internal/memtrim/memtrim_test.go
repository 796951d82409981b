package memtrim

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/bin/compute monitor"
	for _, tc := range []struct {
		line   string
		ok     bool
		lo, hi uintptr
	}{
		{"00400000-009eb000 r-xp 00000000 fe:00 9986093 /usr/bin/compute monitor", true, 0x400000, 0x9eb000},
		{"009eb000-010b4000 r--p 005eb000 fe:00 9986093 /usr/bin/compute monitor", true, 0x9eb000, 0x10b4000},
		{"010b4000-0113e000 rw-p 00cb4000 fe:00 9986093 /usr/bin/compute monitor", false, 0, 0}, // data: never
		{"7fe3a2d1b000-7fe3a2e71000 r-xp 00026000 fe:00 326269 /usr/lib/x86_64-linux-gnu/libc.so.6", false, 0, 0},
		{"473a9000000-473a9400000 rw-p 00000000 00:00 0", false, 0, 0},
		{"7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]", false, 0, 0},
		{"zz-009eb000 r-xp 00000000 fe:00 9986093 /usr/bin/compute monitor", false, 0, 0},
		{"009eb000-00400000 r-xp 00000000 fe:00 9986093 /usr/bin/compute monitor", false, 0, 0},
	} {
		lo, hi, ok := readOnlyMapping(tc.line, exe)
		if ok != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("%q: %#x-%#x %v, want %#x-%#x %v", tc.line, lo, hi, ok, tc.lo, tc.hi, tc.ok)
		}
	}
}

// resident returns the process's resident kB of the executable's mappings.
func resident(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	kb, in := 0, false
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.Contains(f[0], "-") {
			in = strings.Join(f[5:], " ") == exe && !strings.Contains(f[1], "w")
			continue
		}
		if in && len(f) == 3 && f[0] == "Rss:" {
			var n int
			fmt.Sscan(f[1], &n)
			kb += n
		}
	}
	return kb
}

// The test binary trims its own mappings and goes on running (code and read-only data are
// mapped again as they are used); what it had mapped is released.
func TestTrimExecutable(t *testing.T) {
	before := resident(t)
	r, err := TrimExecutable()
	if err != nil {
		t.Fatal(err)
	}
	if r.Mappings == 0 || r.Bytes == 0 {
		t.Fatalf("nothing trimmed: %+v", r)
	}
	after := resident(t)
	// Code runs after the trim, read-only data reads the same.
	if got := fmt.Sprintf("%x", sha256.Sum256([]byte("abc"))); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("sha256 after the trim = %s", got)
	}
	if after >= before {
		t.Errorf("resident read-only pages of the executable: %d kB before, %d kB after", before, after)
	}
	t.Logf("read-only pages of the test binary: %d kB resident before, %d kB after", before, after)
}
