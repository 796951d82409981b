// Package pgdata owns the Postgres data directory (PGDATA): it is the one place that
// names the files compute-tools writes into it and the one that writes them. It creates
// the directory (initdb in standalone mode; a fresh, empty one for a basebackup in neon
// mode, the old one set aside and deleted later), writes postgresql.conf, pg_hba.conf,
// pg_ident.conf and the temporary override file, edits postgresql.conf after the apply
// (the logical replication subscribers line), installs the TLS certificate and key, and
// finishes an unpacked basebackup (signal files, our pg_hba.conf and pg_ident.conf in place
// of the basebackup's, pg_dynshmem). It also makes the directory pgaudit's log files go to
// (log) before Postgres starts, and deletes the old ones there (compute-monitor's audit
// clean-up).
//
// It also owns the throwaway cluster a pooled VM warms up with, <pgdata>.warmup (Warmup):
// a data directory named after PGDATA, like PGDATA's set-aside copies, so that the one
// package that writes data directories names, fills and removes it too; internal/warmup
// runs the processes.
//
// The text of the configuration files comes from package pgconf, which renders and
// never writes; the basebackup itself is unpacked by package pageserver into a
// directory prepared here.
package pgdata

import (
	"fmt"
	"path/filepath"

	"github.com/computetools/compute-tools/internal/atomicfile"
)

// Names of the files and directories inside PGDATA that compute-tools writes, reads or
// checks.
const (
	// ConfFile is postgresql.conf, regenerated at every start and reconfiguration.
	ConfFile = "postgresql.conf"
	// HBAFile and IdentFile are ours in both modes (WriteAuth); in neon mode they replace
	// the basebackup's.
	HBAFile   = "pg_hba.conf"
	IdentFile = "pg_ident.conf"
	// TempOverrideFile is included last by postgresql.conf; compute-configure writes
	// temporary overrides into it (Neon: neon.max_cluster_size=-1 while applying the spec).
	TempOverrideFile = "compute_ctl_temp_override.conf"
	// ServerCertFile and ServerKeyFile are the TLS certificate chain and key Postgres
	// serves with (ssl_cert_file, ssl_key_file).
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	// NeonSignalFile marks a PGDATA made from a basebackup; ZenithSignalFile is its
	// name with older pageservers.
	NeonSignalFile   = "neon.signal"
	ZenithSignalFile = "zenith.signal"
	// StandbySignalFile starts Postgres as a standby (static and replica computes).
	StandbySignalFile = "standby.signal"
	// DynShmemDir is replaced by a symbolic link to DynShmemTarget in neon mode.
	DynShmemDir = "pg_dynshmem"
	// VersionFile is what initdb leaves: its presence means PGDATA is initialized.
	VersionFile = "PG_VERSION"
)

// DynShmemTarget is where pg_dynshmem points after FinishNeon.
const DynShmemTarget = "/dev/shm/"

// Dir is a PGDATA directory. The zero value is not usable: Path must be set.
type Dir struct {
	// Path is the absolute path of PGDATA.
	Path string
	// NoSync writes files without fsync: in neon mode PGDATA is rebuilt at every start,
	// so a flush to disk would only cost time on the startup path.
	NoSync bool
}

// File returns the path of name inside the directory.
func (d Dir) File(name string) string { return filepath.Join(d.Path, name) }

// write replaces the file name with body atomically, mode 0600 (Postgres refuses a
// readable key, and the configuration may hold secrets).
func (d Dir) write(name string, body []byte) error {
	if err := atomicfile.Write(d.File(name), body, atomicfile.Options{Mode: 0o600, NoSync: d.NoSync}); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
