package pgdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
)

// PrepareFresh empties PGDATA for a basebackup (in neon mode PGDATA is fresh on every
// start) and leaves it a directory with mode 0700. It refuses an empty, relative or root
// path.
//
// An existing PGDATA is not deleted on the startup path: it is renamed aside (one
// rename instead of unlinking thousands of files, tens of milliseconds here) and
// RemoveOld deletes it once the compute runs. A copy still set aside (its start
// never reached running) is deleted first, so that failing starts do not pile copies up.
// Where the rename is not possible (PGDATA is a mount point, or its parent is not
// writable) its contents are deleted in place.
func (d Dir) PrepareFresh() error {
	pgdata := d.Path
	if pgdata == "" {
		return errors.New("prepare pgdata: empty path")
	}
	clean := filepath.Clean(pgdata)
	if !filepath.IsAbs(clean) {
		return fmt.Errorf("prepare pgdata %q: not an absolute path", pgdata)
	}
	if clean == "/" {
		return errors.New("prepare pgdata: refusing to wipe /")
	}
	switch _, err := os.Lstat(clean); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("prepare pgdata: %w", err)
	default:
		// One set-aside copy at most: one left by a start that never reached running
		// goes now (that start failed anyway; the usual path has none).
		if _, err := (Dir{Path: clean}).RemoveOld(); err != nil {
			return fmt.Errorf("prepare pgdata: %w", err)
		}
		old := oldPGDataPrefix(clean) + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := os.Rename(clean, old); err != nil {
			if err := removeContents(clean); err != nil {
				return fmt.Errorf("prepare pgdata: remove: %w", err)
			}
		}
	}
	if err := os.Mkdir(clean, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("prepare pgdata: %w", err)
	}
	if err := os.Chmod(clean, 0o700); err != nil { // the umask may have narrowed it
		return fmt.Errorf("prepare pgdata: %w", err)
	}
	return nil
}

// oldPGDataPrefix names the hidden siblings PrepareFresh renames old PGDATAs to.
func oldPGDataPrefix(pgdata string) string {
	return filepath.Join(filepath.Dir(pgdata), "."+filepath.Base(pgdata)+".old.")
}

// removeContents deletes everything inside dir, keeping dir.
func removeContents(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// RemoveOld deletes the old PGDATAs PrepareFresh set aside and returns how many there
// were.
func (d Dir) RemoveOld() (int, error) {
	pgdata := d.Path
	if pgdata == "" || !filepath.IsAbs(pgdata) {
		return 0, fmt.Errorf("remove old pgdata: bad path %q", pgdata)
	}
	prefix := oldPGDataPrefix(filepath.Clean(pgdata))
	ents, err := os.ReadDir(filepath.Dir(prefix))
	if err != nil {
		return 0, fmt.Errorf("remove old pgdata: %w", err)
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(filepath.Dir(prefix), e.Name())
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return n, fmt.Errorf("remove old pgdata: %w", err)
		}
		n++
	}
	return n, nil
}

// FinishNeon does to an unpacked pageserver basebackup what compute_ctl does before
// starting Postgres; mode is the compute mode (spec.ModeTypePrimary, ...):
//   - copy zenith.signal to neon.signal when only the former exists (older pageservers);
//   - replace the basebackup's pg_hba.conf and pg_ident.conf with ours (WriteAuth with
//     auth). compute_ctl keeps the basebackup's file, whose initdb defaults trust every
//     local connection (any OS user on the host would be the superuser), and appends
//     Neon's line (pgconf.NeonHBALine) to it; ours ends with that line too;
//   - replace the (empty) pg_dynshmem directory with a symbolic link to /dev/shm/;
//   - for static and replica computes, create an empty standby.signal if absent.
//
// It may be called again on the same directory.
func (d Dir) FinishNeon(mode spec.ModeType, auth Auth) error {
	if d.Path == "" {
		return errors.New("finish pgdata: empty path")
	}
	if err := checkMode(mode); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := d.neonSignal(); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := d.WriteAuth(auth); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := d.dynShmem(); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if mode != spec.ModeTypePrimary {
		p := d.File(StandbySignalFile)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case errors.Is(err, fs.ErrExist):
		case err != nil:
			return fmt.Errorf("finish pgdata: %w", err)
		default:
			if err := f.Close(); err != nil {
				return fmt.Errorf("finish pgdata: %w", err)
			}
		}
	}
	return nil
}

// checkMode accepts the compute modes of neon.compute_mode.
func checkMode(mode spec.ModeType) error {
	switch mode {
	case spec.ModeTypePrimary, spec.ModeTypeStatic, spec.ModeTypeReplica:
		return nil
	}
	return fmt.Errorf("unknown compute mode %q (want primary, static or replica)", mode)
}

func (d Dir) neonSignal() error {
	neon := d.File(NeonSignalFile)
	if _, err := os.Lstat(neon); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := os.ReadFile(d.File(ZenithSignalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return d.write(NeonSignalFile, data)
}

func (d Dir) dynShmem() error {
	p := d.File(DynShmemDir)
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("pg_dynshmem: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if target, err := os.Readlink(p); err == nil && target == DynShmemTarget {
			return nil // done by an earlier call
		}
		return errors.New("pg_dynshmem: is a symbolic link to somewhere else")
	}
	if !fi.IsDir() {
		return errors.New("pg_dynshmem: not a directory")
	}
	// os.Remove of a directory fails unless it is empty, which is the check we want.
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("pg_dynshmem: not empty or not removable: %w", err)
	}
	if err := os.Symlink(DynShmemTarget, p); err != nil {
		return fmt.Errorf("pg_dynshmem: %w", err)
	}
	return nil
}
