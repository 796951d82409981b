package pgdata

import (
	"context"
	"fmt"
	"os"

	"github.com/computetools/compute-tools/internal/execx"
)

// Initialized reports whether initdb has made a cluster in the directory (PG_VERSION
// exists).
func (d Dir) Initialized() bool {
	_, err := os.Stat(d.File(VersionFile))
	return err == nil
}

// InitdbOptions say how Initdb runs initdb.
type InitdbOptions struct {
	// Initdb is the path of the initdb binary.
	Initdb string
	// Superuser is the bootstrap superuser (initdb -U): the admin role.
	Superuser string
	// OSUser runs initdb when the caller is root; empty: the caller's user.
	OSUser string
	// NoSync skips initdb's flush to disk (initdb -N): for a cluster that is thrown
	// away (Warmup).
	NoSync bool
	// OwnGroup runs initdb in a process group of its own, so that the end of ctx stops
	// its bootstrap backend too (execx.Cmd.OwnGroup): for a caller that removes the
	// directory once initdb was stopped.
	OwnGroup bool
}

// Initdb creates the cluster of a standalone compute: UTF-8, locale C.UTF-8, peer
// authentication over the unix socket and scram-sha-256 over TCP until our pg_hba.conf
// is written. It refuses a cluster, and a directory that has files but no PG_VERSION
// (something that is not a cluster, or a broken one: never touched).
func (d Dir) Initdb(ctx context.Context, o InitdbOptions) error {
	if d.Initialized() {
		return fmt.Errorf("initdb: PGDATA %s holds a cluster already", d.Path)
	}
	if ents, err := os.ReadDir(d.Path); err == nil && len(ents) > 0 {
		return fmt.Errorf("PGDATA %s is not empty but has no PG_VERSION; refusing to touch it", d.Path)
	}
	args := []string{"-D", d.Path, "-U", o.Superuser, "--auth-local=peer", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--locale=C.UTF-8"}
	if o.NoSync {
		args = append(args, "--no-sync")
	}
	_, err := execx.Run(ctx, execx.Cmd{Path: o.Initdb, Args: args, User: o.OSUser, OwnGroup: o.OwnGroup})
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}
