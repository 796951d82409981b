// Package safetar is the common core of our tar unpackers (the basebackup into PGDATA,
// remote extension archives): it checks archive entry names and link targets, and
// writes below one directory only through an os.Root, so that no entry (a ".." name, an
// absolute path, a symbolic link from the archive or one already on disk, a hard link)
// can reach outside that directory. What to unpack, with which modes and in which
// order stays with the caller.
package safetar

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// UnsafeEntryError is an archive entry refused because it would write outside the
// target directory, through a symbolic link, or create something that has no business
// in the directory (a device, a fifo, a link out of it).
type UnsafeEntryError struct {
	Name   string
	Reason string
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("unsafe tar entry %q: %s", e.Name, e.Reason)
}

// Unsafe returns an *UnsafeEntryError for the entry name.
func Unsafe(name, format string, args ...any) error {
	return &UnsafeEntryError{Name: name, Reason: fmt.Sprintf(format, args...)}
}

// CleanName turns an archive entry name into a clean relative slash path ("." for the
// top directory). Empty names, names with a NUL, absolute names and names with a ".."
// element are refused with an *UnsafeEntryError.
func CleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", Unsafe(name, "empty name")
	case strings.ContainsRune(name, 0):
		return "", Unsafe(name, "NUL in name")
	case strings.HasPrefix(name, "/"):
		return "", Unsafe(name, "absolute path")
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", Unsafe(name, "path escapes the target directory")
		}
	}
	return path.Clean(name), nil
}

// CheckLinkTarget accepts the target of a symbolic link entry only when it stays where
// it points whatever directory it is in: relative, without a ".." element, without NUL.
func CheckLinkTarget(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") {
		return Unsafe(name, "symbolic link to %q: only relative targets are allowed", target)
	}
	for part := range strings.SplitSeq(target, "/") {
		if part == ".." {
			return Unsafe(name, "symbolic link to %q: \"..\" is not allowed", target)
		}
	}
	if strings.ContainsRune(target, 0) {
		return Unsafe(name, "NUL in link target")
	}
	return nil
}

// Dir is a target directory. Every operation goes through an os.Root of it: a path that
// would leave it (through "..", or a symbolic link pointing outside) fails whatever
// checks the caller made. Paths are clean relative slash paths (see CleanName); name
// is the archive entry, for errors. A Dir is not safe for concurrent use.
type Dir struct {
	path string
	perm fs.FileMode
	root *os.Root
	// real holds directories known to be real directories, not symbolic links.
	real map[string]bool
	// subs holds opened directories, so that a file is created with one openat.
	subs map[string]*os.Root
}

// Open creates dir with perm (and missing parents) if needed and opens it as a Dir
// whose new directories get perm.
func Open(dir string, perm fs.FileMode) (*Dir, error) {
	if dir == "" {
		return nil, errors.New("empty directory path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, perm); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, err
	}
	return &Dir{path: abs, perm: perm, root: root, real: map[string]bool{".": true}, subs: map[string]*os.Root{}}, nil
}

// Path is the absolute path of the directory.
func (d *Dir) Path() string { return d.path }

// Close releases the directory.
func (d *Dir) Close() error {
	d.closeSubs()
	d.subs = nil
	return d.root.Close()
}

// closeSubs closes the cached directory handles.
func (d *Dir) closeSubs() {
	for k, r := range d.subs {
		_ = r.Close()
		delete(d.subs, k)
	}
}

// Lstat describes rel without following a final symbolic link.
func (d *Dir) Lstat(rel string) (fs.FileInfo, error) { return d.root.Lstat(rel) }

// RealParents makes sure every parent directory of rel is a real directory, creating
// missing ones when create is set. A symbolic link on the way is refused with an
// *UnsafeEntryError, even one that points inside the directory.
func (d *Dir) RealParents(name, rel string, create bool) error {
	dir := path.Dir(rel)
	if d.real[dir] {
		return nil
	}
	prefix := ""
	for part := range strings.SplitSeq(dir, "/") {
		if prefix == "" {
			prefix = part
		} else {
			prefix += "/" + part
		}
		if d.real[prefix] {
			continue
		}
		fi, err := d.root.Lstat(prefix)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := d.root.Mkdir(prefix, d.perm); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return Unsafe(name, "path goes through the symbolic link %q", prefix)
		case !fi.IsDir():
			return fmt.Errorf("%q is not a directory", prefix)
		}
		d.real[prefix] = true
	}
	return nil
}

// Mkdir makes rel a real directory with the Dir's permissions: created (parents too)
// when missing, its mode set when it exists. A symbolic link in the way is refused.
func (d *Dir) Mkdir(name, rel string) error {
	if rel == "." {
		return nil
	}
	if err := d.RealParents(name, rel, true); err != nil {
		return err
	}
	fi, err := d.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := d.root.Mkdir(rel, d.perm); err != nil {
			return err
		}
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return Unsafe(name, "a symbolic link is in the way")
	case !fi.IsDir():
		return errors.New("a file is in the way")
	default:
		if err := d.root.Chmod(rel, d.perm); err != nil {
			return err
		}
	}
	d.real[rel] = true
	return nil
}

// MkdirAll makes rel and its missing parents with the Dir's permissions. Unlike Mkdir it
// leaves existing directories as they are and follows symbolic links that stay inside.
func (d *Dir) MkdirAll(rel string) error { return d.root.MkdirAll(rel, d.perm) }

// Clear removes what is at rel unless it is a directory, which is an error.
func (d *Dir) Clear(rel string) error {
	r, base, err := d.in(rel)
	if err != nil {
		return err
	}
	return clearIn(r, base)
}

func clearIn(r *os.Root, base string) error {
	fi, err := r.Lstat(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("a directory is in the way")
	}
	return r.Remove(base)
}

// in returns the opened parent directory of rel and rel's last element.
func (d *Dir) in(rel string) (*os.Root, string, error) {
	dir, base := path.Split(rel)
	dir = path.Clean(dir)
	if dir == "." {
		return d.root, base, nil
	}
	if r, ok := d.subs[dir]; ok {
		return r, base, nil
	}
	r, err := d.root.OpenRoot(dir)
	if err != nil {
		return nil, "", err
	}
	if len(d.subs) >= maxOpenSubdirs {
		// An archive's entries come directory by directory, so dropping the whole cache
		// now and then costs little, and the open descriptors stay bounded however many
		// directories (databases) the archive has.
		d.closeSubs()
	}
	d.subs[dir] = r
	return r, base, nil
}

// maxOpenSubdirs bounds the directory handles a Dir keeps open between entries.
const maxOpenSubdirs = 64

// CreateFile creates rel as a new regular file with perm (the caller's umask applies),
// after removing a file or symbolic link at rel; the parents must exist. The file is
// opened write-only and never through a symbolic link.
func (d *Dir) CreateFile(rel string, perm fs.FileMode) (*os.File, error) {
	r, base, err := d.in(rel)
	if err != nil {
		return nil, err
	}
	if err := clearIn(r, base); err != nil {
		return nil, err
	}
	return r.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
}

// CreateTemp creates a new file with perm beside rel, named after it, for a caller that
// renames it into place later. It returns the file and its relative path.
func (d *Dir) CreateTemp(rel string, perm fs.FileMode) (*os.File, string, error) {
	r, base, err := d.in(rel)
	if err != nil {
		return nil, "", err
	}
	for range 10 {
		var b [6]byte
		_, _ = rand.Read(b[:])
		tmp := "." + base + ".tmp-" + hex.EncodeToString(b[:])
		f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		return f, path.Join(path.Dir(rel), tmp), nil
	}
	return nil, "", fmt.Errorf("create a temporary file beside %q: too many tries", rel)
}

// Rename moves from to to, both inside the directory, replacing a file at to.
func (d *Dir) Rename(from, to string) error { return d.root.Rename(from, to) }

// Remove removes the file or empty directory rel.
func (d *Dir) Remove(rel string) error { return d.root.Remove(rel) }

// Symlink makes rel a symbolic link to target, replacing a file or link at rel. The
// target must pass CheckLinkTarget; the parents must exist.
func (d *Dir) Symlink(name, rel, target string) error {
	if rel == "." {
		return Unsafe(name, "a symbolic link cannot replace the target directory")
	}
	if err := CheckLinkTarget(name, target); err != nil {
		return err
	}
	if err := d.Clear(rel); err != nil {
		return err
	}
	return d.root.Symlink(target, rel)
}

// Link makes rel a hard link to the regular file target (an archive path, relative to
// the directory), replacing a file or link at rel. A target outside the directory, one
// reached through a symbolic link, or anything but a regular file is refused.
func (d *Dir) Link(name, rel, target string) error {
	if rel == "." {
		return Unsafe(name, "a link cannot replace the target directory")
	}
	trel, err := CleanName(target)
	if err != nil {
		return Unsafe(name, "hard link to %q: outside the target directory", target)
	}
	if trel == "." || trel == rel {
		return Unsafe(name, "hard link to %q: not a file of the archive", target)
	}
	if err := d.RealParents(name, trel, false); err != nil {
		return err
	}
	fi, err := d.root.Lstat(trel)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Unsafe(name, "hard link to %q: not a regular file", target)
	}
	if err := d.RealParents(name, rel, true); err != nil {
		return err
	}
	if err := d.Clear(rel); err != nil {
		return err
	}
	return d.root.Link(trel, rel)
}
