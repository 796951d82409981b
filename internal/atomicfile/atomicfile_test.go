package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteReplacesAndLeavesNoTemp(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		testWrite(t, noSync)
	}
}

// testWrite: the same visible result with or without the fsyncs.
func testWrite(t *testing.T, noSync bool) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := Write(p, []byte("one"), Options{NoSync: noSync}); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), Options{Mode: 0o600, NoSync: noSync}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("read back %q, %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
}

func TestWriteIntoMissingDirFails(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "nope", "f"), []byte("x"), Options{})
	if err == nil {
		t.Fatal("expected an error for a missing directory")
	}
}

// Run as root, a replaced file keeps its owner (a step run by hand on the files of the
// postgres user must not leave them to root).
func TestWriteKeepsTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own files as someone else")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), Options{Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 {
		t.Errorf("owner %d:%d, want 4242:4343", st.Uid, st.Gid)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "state.json")
	if err := Write(ok, []byte(`{"status":"running"}`), Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(ok, 100); err != nil || string(b) != `{"status":"running"}` {
		t.Fatalf("ReadFile: %q, %v", b, err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root's secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{link, "symbolic link"},
		{fifo, "not a regular file"},
		{dir, "not a regular file"},
		{ok, "larger than 5 bytes"},
	} {
		b, err := ReadFile(tc.path, 5)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadFile(%s): %q, %v; want %q", tc.path, b, err, tc.want)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "none"), 5); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
