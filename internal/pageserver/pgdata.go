package pageserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/pgconf"
)

// pgdataFile is how FinishPGData writes files: a neon PGDATA is rebuilt at every start,
// so a flush to disk would only cost time on the startup path.
var pgdataFile = atomicfile.Options{Mode: 0o600, NoSync: true}

// DynShmemTarget is where pg_dynshmem points after FinishPGData.
const DynShmemTarget = "/dev/shm/"

// PrepareFreshPGData empties pgdata for a basebackup (in neon mode PGDATA is fresh on
// every start) and leaves it a directory with mode 0700. It refuses an empty, relative or
// root path.
//
// An existing PGDATA is not deleted on the startup path: it is renamed aside (one
// rename instead of unlinking thousands of files, tens of milliseconds here) and
// RemoveOldPGData deletes it once the compute runs. A copy still set aside (its start
// never reached running) is deleted first, so that failing starts do not pile copies up.
// Where the rename is not possible (PGDATA is a mount point, or its parent is not
// writable) its contents are deleted in place.
func PrepareFreshPGData(pgdata string) error {
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
		if _, err := RemoveOldPGData(clean); err != nil {
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

// oldPGDataPrefix names the hidden siblings PrepareFreshPGData renames old PGDATAs to.
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

// RemoveOldPGData deletes the old PGDATAs PrepareFreshPGData set aside and returns how
// many there were.
func RemoveOldPGData(pgdata string) (int, error) {
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

// FinishPGData does to an unpacked pageserver basebackup what compute_ctl does before
// starting Postgres:
//   - copy zenith.signal to neon.signal when only the former exists (older pageservers);
//   - append Neon's pg_hba.conf line (pgconf.NeonHBALine) unless it is already there;
//   - replace the (empty) pg_dynshmem directory with a symbolic link to /dev/shm/;
//   - for static and replica computes, create an empty standby.signal if absent.
//
// It may be called again on the same directory.
func FinishPGData(pgdata, mode string) error {
	if pgdata == "" {
		return errors.New("finish pgdata: empty path")
	}
	if err := checkMode(mode); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := neonSignal(pgdata); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := hbaLine(pgdata); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if err := dynShmem(pgdata); err != nil {
		return fmt.Errorf("finish pgdata: %w", err)
	}
	if mode != ModePrimary {
		p := filepath.Join(pgdata, "standby.signal")
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

func neonSignal(pgdata string) error {
	neon := filepath.Join(pgdata, "neon.signal")
	if _, err := os.Lstat(neon); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := os.ReadFile(filepath.Join(pgdata, "zenith.signal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return atomicfile.Write(neon, data, pgdataFile)
}

func hbaLine(pgdata string) error {
	p := filepath.Join(pgdata, "pg_hba.conf")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	updated := pgconf.AppendHBALine(string(old))
	if updated == string(old) {
		return nil
	}
	return atomicfile.Write(p, []byte(updated), pgdataFile)
}

func dynShmem(pgdata string) error {
	p := filepath.Join(pgdata, "pg_dynshmem")
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
