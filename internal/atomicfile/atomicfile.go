// Package atomicfile writes files so that readers see either the old or the new content,
// never a torn write: temp file in the same directory, fsync, rename, fsync the directory.
// Options.NoSync drops the two fsyncs for files whose durability does not matter. ReadFile
// is the matching read for a privileged reader of a directory others write. A
// replaced file keeps its owner when the writer is root.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Options tune a write. The zero value writes mode 0644.
type Options struct {
	Mode os.FileMode
	// NoSync skips the fsyncs: readers still never see a torn file, but after a crash
	// the file may hold the old content, or none. For files that are rebuilt anyway
	// after a crash, such as a neon-mode PGDATA (fresh at every start), where each fsync
	// would cost a disk flush on the startup path.
	NoSync bool
}

// Write replaces path with data atomically.
func Write(path string, data []byte, opts Options) error {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := keepOwner(f, path); err != nil {
		return fmt.Errorf("chown %s: %w", tmp, err)
	}
	if !opts.NoSync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	ok = true
	if opts.NoSync {
		return nil
	}
	return syncDir(dir)
}

// keepOwner gives the new file the owner of the file it replaces, when this process is
// root (say, a step run by hand on files of the postgres user); otherwise a replaced file
// belongs to whoever writes it. Root without CAP_CHOWN (compute-api's sandbox) cannot,
// and writes as before.
func keepOwner(f *os.File, path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Lstat(path) // the file replaced, never a link's target
	if err != nil {
		return nil // a new file
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return nil
	}
	if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// ReadFile reads path the way a privileged reader must read a file in a directory that
// less privileged users can write (the state directory, which postgres writes and root
// reads): the last element is never followed if it is a symbolic link (a planted link
// would make root read any file), it must be a regular file (opened without blocking, so
// a FIFO does not stall the reader), and at most max bytes are read.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("read %s: is a symbolic link", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", path)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, max)
	}
	return b, nil
}
