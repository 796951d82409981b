package pgdata_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgdata"
)

// The clean-up deletes exactly the audit files older than the limit, by their mtimes, and
// measures the log files left (compute_ctl's find and its gauge).
func TestSweepAuditLogs(t *testing.T) {
	d := pgdata.Dir{Path: t.TempDir()}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if n, size, err := d.SweepAuditLogs(now, pgdata.AuditLogMaxAge); n != 0 || size != 0 || err != nil {
		t.Errorf("without a log directory: %d, %d, %v", n, size, err)
	}
	if err := d.EnsureLogDir(); err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureLogDir(); err != nil {
		t.Fatalf("EnsureLogDir on an existing directory: %v", err)
	}
	if fi, err := os.Stat(d.LogDirPath()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("log directory: %v %v", fi.Mode(), err)
	}
	files := []struct {
		name  string
		age   time.Duration
		size  int
		stays bool
	}{
		{"audit-20261206_1100.log", 16 * time.Minute, 100, false},
		{"audit-20261206_1000.log", 2 * time.Hour, 50, false},
		{"audit-20261206_1145.log", 15 * time.Minute, 7, true}, // not more than 15 minutes
		{"audit-20261206_1155.log", time.Minute, 30, true},
		{"postgresql-2026-12-06.log", 3 * time.Hour, 11, true}, // not an audit file, counted
		{"audit-old.csv", 3 * time.Hour, 1000, true},           // neither deleted nor counted
		{"xaudit.log", 3 * time.Hour, 3, true},                 // counted: ends in "log"
	}
	for _, f := range files {
		p := filepath.Join(d.LogDirPath(), f.name)
		if err := os.WriteFile(p, make([]byte, f.size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-f.age), now.Add(-f.age)); err != nil {
			t.Fatal(err)
		}
	}
	// A directory and a symbolic link named like old audit files are left alone.
	if err := os.Mkdir(filepath.Join(d.LogDirPath(), "audit-dir.log"), 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(d.LogDirPath(), "audit-link.log")); err != nil {
		t.Fatal(err)
	}
	n, size, err := d.SweepAuditLogs(now, pgdata.AuditLogMaxAge)
	if err != nil || n != 2 || size != 7+30+11+3 {
		t.Errorf("SweepAuditLogs = %d deleted, %d bytes, %v; want 2, 51", n, size, err)
	}
	for _, f := range files {
		_, err := os.Stat(filepath.Join(d.LogDirPath(), f.name))
		if gone := errors.Is(err, fs.ErrNotExist); gone == f.stays {
			t.Errorf("%s: gone %v, want it to stay %v", f.name, gone, f.stays)
		}
	}
	for _, p := range []string{filepath.Join(d.LogDirPath(), "audit-dir.log"), filepath.Join(d.LogDirPath(), "audit-link.log"), target} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// Later, the one that was just at the limit goes too.
	if n, size, err := d.SweepAuditLogs(now.Add(time.Minute), pgdata.AuditLogMaxAge); n != 1 || size != 30+11+3 || err != nil {
		t.Errorf("a minute later: %d, %d, %v; want 1, 44", n, size, err)
	}
}
