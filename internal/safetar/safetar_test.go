package safetar

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func isUnsafe(err error) bool {
	var u *UnsafeEntryError
	return errors.As(err, &u)
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		name, want, err string
	}{
		{"base/1/112", "base/1/112", ""},
		{"./base//1/", "base/1", ""},
		{"./", ".", ""},
		{"a/./b", "a/b", ""},
		{"..a/b..", "..a/b..", ""},
		{"", "", "empty name"},
		{"a\x00b", "", "NUL"},
		{"/etc/passwd", "", "absolute"},
		{"../evil", "", "escapes"},
		{"base/../../evil", "", "escapes"},
		{"base/..", "", "escapes"},
	} {
		got, err := CleanName(tc.name)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("CleanName(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (!isUnsafe(err) || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("CleanName(%q) = %q, %v; want an unsafe entry error with %q", tc.name, got, err, tc.err)
		}
	}
}

func TestCheckLinkTarget(t *testing.T) {
	for target, ok := range map[string]bool{
		"base/1/112": true, "foo.so.1": true, "./x": true, "a..b": true,
		"": false, "/etc": false, "..": false, "../x": false, "a/../../x": false, "a\x00": false,
	} {
		if err := CheckLinkTarget("l", target); (err == nil) != ok || (err != nil && !isUnsafe(err)) {
			t.Errorf("CheckLinkTarget(%q) = %v, want ok=%v", target, err, ok)
		}
	}
}

// setup returns an open Dir at base/pgdata and base itself (outside the Dir), with a
// file "secret" outside and symbolic links inside that point out of the Dir.
func setup(t *testing.T) (*Dir, string) {
	t.Helper()
	base := t.TempDir()
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Open(filepath.Join(base, "pgdata"), 0o700)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// Left by something else, not by an archive: links out of the directory.
	for name, target := range map[string]string{"out": base, "abs": "/etc", "secretlink": filepath.Join(base, "secret")} {
		if err := os.Symlink(target, filepath.Join(d.Path(), name)); err != nil {
			t.Fatal(err)
		}
	}
	return d, base
}

// outsideUntouched fails when anything beside pgdata and secret appeared in base, or
// secret changed.
func outsideUntouched(t *testing.T, base string) {
	t.Helper()
	ents, _ := os.ReadDir(base)
	if len(ents) != 2 {
		t.Errorf("outside the directory: %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(base, "secret")); err != nil || string(b) != "keep" {
		t.Errorf("secret: %q, %v", b, err)
	}
}

func TestDirRefusesEscapes(t *testing.T) {
	d, base := setup(t)
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"file through a link out", func() error { _, err := d.CreateFile("out/evil", 0o600); return err }},
		{"file through an absolute link", func() error { _, err := d.CreateFile("abs/evil", 0o600); return err }},
		{"file with dot dot", func() error { _, err := d.CreateFile("../evil", 0o600); return err }},
		{"temp file through a link out", func() error { _, _, err := d.CreateTemp("out/evil", 0o600); return err }},
		{"real parents through a link out", func() error { return d.RealParents("out/evil", "out/evil", true) }},
		{"mkdir through a link out", func() error { return d.Mkdir("out/sub/", "out/sub") }},
		{"mkdir on a link", func() error { return d.Mkdir("out/", "out") }},
		{"mkdirall through a link out", func() error { return d.MkdirAll("out/sub") }},
		{"symlink upwards", func() error { return d.Symlink("up", "up", "../..") }},
		{"symlink absolute", func() error { return d.Symlink("etc", "etc", "/etc") }},
		{"symlink through a link out", func() error { return d.Symlink("out/x", "out/x", "y") }},
		{"hard link to an absolute path", func() error { return d.Link("pw", "pw", "/etc/passwd") }},
		{"hard link upwards", func() error { return d.Link("pw", "pw", "../secret") }},
		{"hard link through a link out", func() error { return d.Link("pw", "pw", "out/secret") }},
		{"hard link to a link out", func() error { return d.Link("pw", "pw", "secretlink") }},
		{"hard link into a link out", func() error {
			if _, err := d.CreateFile("f", 0o600); err != nil {
				return nil // makes the case fail
			}
			return d.Link("out/f", "out/f", "f")
		}},
		{"rename out", func() error {
			f, err := d.CreateFile("g", 0o600)
			if err != nil {
				return nil
			}
			f.Close()
			return d.Rename("g", "out/g")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); err == nil {
				t.Fatal("no error")
			} else {
				t.Logf("error: %v", err)
			}
			outsideUntouched(t, base)
		})
	}
	if _, err := os.Lstat("/etc/evil"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/etc/evil: %v", err)
	}
}

func TestDirReplacesLinksInsteadOfWritingThroughThem(t *testing.T) {
	d, base := setup(t)
	f, err := d.CreateFile("secretlink", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new")
	f.Close()
	if err := d.Symlink("abs", "abs", "secretlink"); err != nil {
		t.Fatal(err)
	}
	outsideUntouched(t, base)
	if fi, err := os.Lstat(filepath.Join(d.Path(), "secretlink")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("secretlink: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(d.Path(), "abs")); err != nil || target != "secretlink" {
		t.Errorf("abs -> %q, %v", target, err)
	}
}

func TestDirInsideLinks(t *testing.T) {
	d, _ := setup(t)
	if err := d.Mkdir("real/", "real"); err != nil {
		t.Fatal(err)
	}
	if err := d.Symlink("lnk", "lnk", "real"); err != nil {
		t.Fatal(err)
	}
	// The strict path refuses even a link that stays inside...
	if err := d.RealParents("lnk/file", "lnk/file", true); !isUnsafe(err) || !strings.Contains(err.Error(), "through the symbolic link") {
		t.Errorf("RealParents through an inside link: %v", err)
	}
	// ...MkdirAll follows it, staying inside.
	if err := d.MkdirAll("lnk/sub"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(d.Path(), "real", "sub")); err != nil || !fi.IsDir() {
		t.Errorf("real/sub: %v, %v", fi, err)
	}
}

func TestDirWrites(t *testing.T) {
	d, _ := setup(t)
	if err := d.Mkdir("a/b/", "a/b"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second run replaces what the first left
		f, err := d.CreateFile("a/b/f", 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("data")
		f.Close()
		if err := d.Link("a/h", "a/h", "a/b/f"); err != nil {
			t.Fatal(err)
		}
		if err := d.Symlink("a/l", "a/l", "b/f"); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(d.Path(), "a", "h")); err != nil || string(b) != "data" {
		t.Errorf("hard link: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(d.Path(), "a", "l")); err != nil || string(b) != "data" {
		t.Errorf("symlink: %q, %v", b, err)
	}
	if err := d.Link("a/h2", "a/h2", "a/b"); !isUnsafe(err) {
		t.Errorf("hard link to a directory: %v", err)
	}
	if err := d.Link("a/b/f", "a/b/f", "a/b/f"); !isUnsafe(err) {
		t.Errorf("hard link to itself: %v", err)
	}
	if _, err := d.CreateFile("a/b", 0o600); err == nil || !strings.Contains(err.Error(), "directory is in the way") {
		t.Errorf("file over a directory: %v", err)
	}
	tf, tmp, err := d.CreateTemp("a/b/f", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tf.WriteString("new")
	tf.Close()
	if !strings.HasPrefix(tmp, "a/b/.f.tmp-") {
		t.Errorf("temp file %q", tmp)
	}
	if err := d.Rename(tmp, "a/b/f"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(d.Path(), "a", "b", "f")); string(b) != "new" {
		t.Errorf("after rename: %q", b)
	}
	for rel, want := range map[string]fs.FileMode{"a": fs.ModeDir | 0o700, "a/b": fs.ModeDir | 0o700} {
		if fi, err := d.Lstat(rel); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, %v; want %v", rel, fi.Mode(), err, want)
		}
	}
}

// However many directories an archive writes into, the handles kept open stay bounded,
// and every file still lands where it belongs.
func TestDirBoundsOpenHandles(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const n = 3*maxOpenSubdirs + 5
	for i := range n {
		sub := fmt.Sprintf("base/%d", i)
		if err := d.MkdirAll(sub); err != nil {
			t.Fatal(err)
		}
		f, err := d.CreateFile(sub+"/PG_VERSION", 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(f, "%d", i); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if len(d.subs) > maxOpenSubdirs {
			t.Fatalf("%d directory handles open after %d directories", len(d.subs), i+1)
		}
	}
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, "base", fmt.Sprint(i), "PG_VERSION"))
		if err != nil || string(b) != fmt.Sprint(i) {
			t.Fatalf("base/%d: %q, %v", i, b, err)
		}
	}
}
