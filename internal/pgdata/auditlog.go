package pgdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LogDir is the directory inside PGDATA where pgauditlogtofile writes the compliance
// audit files (its log_directory default, "log"), which compute-rsyslog.service ships.
const LogDir = "log"

// AuditLogMaxAge is how long an audit file may go unmodified before SweepAuditLogs
// deletes it: compute_ctl's 15 minutes (pgaudit.log_rotation_age is 5), time enough for
// rsyslog to ship it.
const AuditLogMaxAge = 15 * time.Minute

// LogDirPath is the absolute path of LogDir.
func (d Dir) LogDirPath() string { return d.File(LogDir) }

// EnsureLogDir creates LogDir (0700, as Postgres makes its directories) when it is
// missing, so that the audit shipping watches it before Postgres starts (in neon mode
// PGDATA is new at every start).
func (d Dir) EnsureLogDir() error {
	if err := os.Mkdir(d.LogDirPath(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", d.LogDirPath(), err)
	}
	return nil
}

// SweepAuditLogs is compute_ctl's pgaudit clean-up (`find <PGDATA>/log -name 'audit*.log'
// -mmin +15 -delete`) and its compute_audit_log_dir_size figure: it deletes the regular
// files of LogDir named audit*.log that were last modified more than maxAge before now,
// then returns how many it deleted and the size in bytes of the regular files left whose
// name ends in "log". Differences: only LogDir itself, not its subdirectories (find
// recurses; pgauditlogtofile writes none), and never a symbolic link. A missing LogDir
// is no error (nothing written yet). The first error that stops it is returned with
// what was done until then.
func (d Dir) SweepAuditLogs(now time.Time, maxAge time.Duration) (removed int, size int64, err error) {
	dir := d.LogDirPath()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("audit logs: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		info, err := e.Info()
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // rotated away meanwhile
				errs = append(errs, err)
			}
			continue
		}
		if strings.HasPrefix(name, "audit") && strings.HasSuffix(name, ".log") && now.Sub(info.ModTime()) > maxAge {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			} else {
				removed++
			}
			continue
		}
		if strings.HasSuffix(name, "log") {
			size += info.Size()
		}
	}
	if len(errs) > 0 {
		return removed, size, fmt.Errorf("audit logs: %w", errors.Join(errs...))
	}
	return removed, size, nil
}
