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
	_, err := execx.Run(ctx, execx.Cmd{
		Path: o.Initdb,
		Args: []string{"-D", d.Path, "-U", o.Superuser, "--auth-local=peer", "--auth-host=scram-sha-256",
			"-E", "UTF8", "--locale=C.UTF-8"},
		User: o.OSUser,
	})
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}
