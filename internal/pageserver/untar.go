package pageserver

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// UnsafeEntryError is an archive entry refused because it would write outside the
// target directory, through a symbolic link, or create a device or fifo.
type UnsafeEntryError struct {
	Name   string
	Reason string
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("unsafe tar entry %q: %s", e.Name, e.Reason)
}

func unsafeEntry(name, format string, args ...any) error {
	return &UnsafeEntryError{Name: name, Reason: fmt.Sprintf(format, args...)}
}

const copyBufSize = 256 << 10

// Untar unpacks the gzip'd tar stream r into dir (created 0700 if missing) and then
// reads r to its end, so that the caller's stream is fully consumed and the gzip
// checksum is verified. Directories are made 0700 and files 0600 (0700 when the archive
// marks them executable): PostgreSQL wants a private data directory. Entries that would
// land outside dir, go through a symbolic link, or are devices or fifos are refused
// with an *UnsafeEntryError; symbolic links must be relative and may not contain "..".
func Untar(r io.Reader, dir string) error {
	if dir == "" {
		return errors.New("untar: empty directory path")
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("untar: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("untar: %w", err)
	}
	br := bufio.NewReaderSize(r, copyBufSize)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	x := &extractor{root: root, dirs: map[string]bool{}, w: bufio.NewWriterSize(nil, copyBufSize)}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Past the tar end: trailing zero blocks, the gzip trailer (checksum), and anything
	// the server still sends.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	return nil
}

type extractor struct {
	root string
	// dirs holds relative paths known to be real directories (not symbolic links).
	dirs map[string]bool
	w    *bufio.Writer
}

// cleanName turns an archive name into a clean relative slash path ("." for the root).
func cleanName(name string) (string, error) {
	if name == "" {
		return "", unsafeEntry(name, "empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", unsafeEntry(name, "NUL in name")
	}
	if strings.HasPrefix(name, "/") {
		return "", unsafeEntry(name, "absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", unsafeEntry(name, "path escapes the target directory")
		}
	}
	return path.Clean(name), nil
}

func (x *extractor) abs(rel string) string { return filepath.Join(x.root, filepath.FromSlash(rel)) }

// parents makes sure every parent directory of rel is a real directory inside the root,
// creating missing ones when create is set.
func (x *extractor) parents(name, rel string, create bool) error {
	dir := path.Dir(rel)
	if dir == "." || x.dirs[dir] {
		return nil
	}
	prefix := ""
	for _, part := range strings.Split(dir, "/") {
		if prefix == "" {
			prefix = part
		} else {
			prefix += "/" + part
		}
		if x.dirs[prefix] {
			continue
		}
		p := x.abs(prefix)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("untar %q: %w", name, err)
			}
		case err != nil:
			return fmt.Errorf("untar %q: %w", name, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return unsafeEntry(name, "path goes through the symbolic link %q", prefix)
		case !fi.IsDir():
			return fmt.Errorf("untar %q: %q is not a directory", name, prefix)
		}
		x.dirs[prefix] = true
	}
	return nil
}

// clear removes what is at p unless it is a directory (left by an earlier attempt).
func clearPath(name, p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("untar %q: a directory is in the way", name)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	return nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := hdr.Name
	rel, err := cleanName(name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		return unsafeEntry(name, "device entries are not allowed")
	case tar.TypeFifo:
		return unsafeEntry(name, "fifo entries are not allowed")
	case tar.TypeDir:
		return x.dir(name, rel)
	case tar.TypeReg, tar.TypeGNUSparse:
		return x.file(name, rel, hdr.Mode, r)
	case tar.TypeSymlink:
		return x.symlink(name, rel, hdr.Linkname)
	case tar.TypeLink:
		return x.hardlink(name, rel, hdr.Linkname)
	default:
		return unsafeEntry(name, "unsupported entry type %q", hdr.Typeflag)
	}
}

func (x *extractor) dir(name, rel string) error {
	if rel == "." {
		return nil
	}
	if err := x.parents(name, rel, true); err != nil {
		return err
	}
	p := x.abs(rel)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("untar %q: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("untar %q: %w", name, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return unsafeEntry(name, "a symbolic link is in the way")
	case !fi.IsDir():
		return fmt.Errorf("untar %q: a file is in the way", name)
	default:
		if err := os.Chmod(p, 0o700); err != nil {
			return fmt.Errorf("untar %q: %w", name, err)
		}
	}
	x.dirs[rel] = true
	return nil
}

// onlyWriter hides the file's ReadFrom so that bufio does the buffering.
type onlyWriter struct{ io.Writer }

func (x *extractor) file(name, rel string, mode int64, r io.Reader) error {
	if rel == "." {
		return unsafeEntry(name, "a file cannot replace the target directory")
	}
	if err := x.parents(name, rel, true); err != nil {
		return err
	}
	p := x.abs(rel)
	if err := clearPath(name, p); err != nil {
		return err
	}
	perm := os.FileMode(0o600)
	if mode&0o100 != 0 {
		perm = 0o700
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	x.w.Reset(onlyWriter{f})
	_, err = io.Copy(x.w, r)
	if err == nil {
		err = x.w.Flush()
	}
	if err == nil {
		err = f.Chmod(perm) // the umask may have narrowed it
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	return nil
}

func (x *extractor) symlink(name, rel, target string) error {
	if rel == "." {
		return unsafeEntry(name, "a symbolic link cannot replace the target directory")
	}
	if target == "" || strings.HasPrefix(target, "/") {
		return unsafeEntry(name, "symbolic link to %q: only relative targets are allowed", target)
	}
	for _, part := range strings.Split(target, "/") {
		if part == ".." {
			return unsafeEntry(name, "symbolic link to %q: \"..\" is not allowed", target)
		}
	}
	if strings.ContainsRune(target, 0) {
		return unsafeEntry(name, "NUL in link target")
	}
	if err := x.parents(name, rel, true); err != nil {
		return err
	}
	p := x.abs(rel)
	if err := clearPath(name, p); err != nil {
		return err
	}
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	return nil
}

func (x *extractor) hardlink(name, rel, target string) error {
	if rel == "." {
		return unsafeEntry(name, "a link cannot replace the target directory")
	}
	trel, err := cleanName(target)
	if err != nil {
		return unsafeEntry(name, "hard link to %q: outside the target directory", target)
	}
	if trel == "." || trel == rel {
		return unsafeEntry(name, "hard link to %q: not a file of the archive", target)
	}
	if err := x.parents(name, trel, false); err != nil {
		return err
	}
	tp := x.abs(trel)
	fi, err := os.Lstat(tp)
	if err != nil {
		return fmt.Errorf("untar %q: hard link target: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return unsafeEntry(name, "hard link to %q: not a regular file", target)
	}
	if err := x.parents(name, rel, true); err != nil {
		return err
	}
	p := x.abs(rel)
	if err := clearPath(name, p); err != nil {
		return err
	}
	if err := os.Link(tp, p); err != nil {
		return fmt.Errorf("untar %q: %w", name, err)
	}
	return nil
}
