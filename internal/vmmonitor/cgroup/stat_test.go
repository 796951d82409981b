package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// On a cgroup file system the file stays open and each read generates the text anew; a
// read after the cgroup was removed is fs.ErrNotExist and closes the file. Runs on any
// host with a cgroup v2 hierarchy mounted (no controller needed: cgroup.events is in
// every cgroup), as root.
func TestCGFileOnCgroupFS(t *testing.T) {
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted (/proc/self/mountinfo has no cgroup2)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup")
	}
	dir := filepath.Join(mnt, fmt.Sprintf("compute-tools-cgfile-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under %s: %v", mnt, err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			os.Remove(dir)
		}
	})

	f := newCGFile(filepath.Join(dir, "cgroup.events"), make([]byte, 0, 4)) // grows
	for i := 0; i < 3; i++ {
		b, err := f.read()
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !strings.HasPrefix(string(b), "populated 0\n") {
			t.Fatalf("read %d = %q, want the whole cgroup.events", i, b)
		}
		if f.fd < 0 {
			t.Fatalf("read %d: the file was not kept open on a cgroup file system", i)
		}
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	removed = true
	_, err := f.read()
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "cgroup removed") {
		t.Errorf("read after the cgroup was removed: %v, want cgroup removed (fs.ErrNotExist)", err)
	}
	if f.fd >= 0 {
		t.Error("the file of a removed cgroup is still open")
	}
	if _, err := f.read(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read after that: %v, want fs.ErrNotExist from open", err)
	}
}

// Elsewhere the file is opened at each read: a rewrite is seen, as is a removal, and a
// text longer than the buffer comes whole.
func TestCGFileRegular(t *testing.T) {
	path := filepath.Join(t.TempDir(), "memory.stat")
	f := newCGFile(path, make([]byte, 0, 8))
	for _, text := range []string{"anon 1\n", strings.Repeat("active_anon 12345\n", 100), "anon 2\n"} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := f.read()
		if err != nil || string(b) != text {
			t.Fatalf("read = %q, %v; want %q", b, err, text)
		}
		if f.fd >= 0 {
			t.Fatal("a regular file was kept open")
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.read(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read of a removed file: %v, want fs.ErrNotExist", err)
	}
}
