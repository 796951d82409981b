package pgdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/computetools/compute-tools/internal/pgconf"
)

// warmupSuffix names the throwaway cluster beside PGDATA (compute_ctl's <pgdata>.warmup).
const warmupSuffix = ".warmup"

// Warmup is the throwaway data directory a pooled VM warms up with (internal/warmup):
// <pgdata>.warmup, a sibling of PGDATA and never PGDATA itself. It is written without
// fsync: nothing in it is kept.
func Warmup(pgdata string) Dir {
	return Dir{Path: filepath.Clean(pgdata) + warmupSuffix, NoSync: true}
}

// WriteWarmupConf replaces the throwaway cluster's postgresql.conf (the one initdb
// wrote) with pgconf.Warmup's, its socket in the directory itself.
func (d Dir) WriteWarmupConf(preloadNeon bool) error {
	return d.write(ConfFile, []byte(pgconf.Warmup(pgconf.WarmupOptions{SocketDir: d.Path, PreloadNeon: preloadNeon})))
}

// removeAttempts bounds RemoveWarmup's tries: a process that was just killed may still
// finish a write into the directory while it is being removed.
const removeAttempts = 3

// RemoveWarmup deletes the warm-up directory of pgdata (Warmup) and everything in it,
// and reports whether there was one. It takes PGDATA's path, not a Dir, so that it can
// remove nothing else. It refuses an empty or relative path.
func RemoveWarmup(pgdata string) (bool, error) {
	if pgdata == "" || !filepath.IsAbs(pgdata) {
		return false, fmt.Errorf("remove warm-up directory: PGDATA %q is not an absolute path", pgdata)
	}
	dir := Warmup(pgdata).Path
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	var err error
	for range removeAttempts {
		if err = os.RemoveAll(dir); err == nil {
			return true, nil
		}
	}
	return true, fmt.Errorf("remove warm-up directory: %w", err)
}
