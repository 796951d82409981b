// Package pgcollect reads the installed-extensions statistics (internal/extstats) from
// Postgres, as Neon's compute_ctl does (compute_tools/src/installed_extensions.rs,
// reference commit 53a05e8ccb): it lists the databases that accept connections and are
// valid (datallowconn, datconnlimit <> -2: not left invalid by an interrupted DROP
// DATABASE), at most 500 of them, and reads pg_catalog.pg_extension in each over its own
// connection, one database after the other, as the admin role with application_name
// compute_ctl:get_installed_extensions and internal/pg's startup options.
//
// Differences from the reference (see internal/extstats for the reasons): the list is
// ordered by OID before the limit; a database that cannot be read is skipped with a
// warning and counted (the collection fails only when none could be read, or when the
// list itself cannot be read, or when ctx ends); every database is bounded by
// DBTimeout.
package pgcollect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/pg"
)

// AppName is the application_name of the collector's connections, as the reference's.
const AppName = "compute_ctl:get_installed_extensions"

// Defaults of Options.
const (
	// DefaultMaxDatabases is the reference's LIMIT.
	DefaultMaxDatabases = 500
	// DefaultDBTimeout bounds connecting to one database and reading it (and the list).
	DefaultDBTimeout = 10 * time.Second
)

// The queries. The list takes the limit as a parameter (tests use a small one).
const (
	listDatabasesSQL = `SELECT datname FROM pg_catalog.pg_database
WHERE datallowconn AND datconnlimit <> -2
ORDER BY oid
LIMIT $1`
	extensionsSQL = `SELECT extname, extversion, extowner FROM pg_catalog.pg_extension`
)

// Connector opens a connection to database db as the admin role; db "" is the
// connection string's own database (where the list is read).
type Connector func(ctx context.Context, db string) (*pgx.Conn, error)

// PGConnector connects with connstr (internal/pg's Config: Neon's startup options) and
// application_name AppName, to the database asked for. The connection string is parsed
// once, here.
func PGConnector(connstr string) (Connector, error) {
	base, err := pg.Config(connstr, AppName)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, db string) (*pgx.Conn, error) {
		cfg := base.Copy()
		if db != "" {
			cfg.Database = db
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("connect to postgres: %w", err)
		}
		return c, nil
	}, nil
}

// Options tune Collect; the zero value is the reference's behaviour.
type Options struct {
	// MaxDatabases is the most databases read; <= 0: DefaultMaxDatabases.
	MaxDatabases int
	// DBTimeout bounds reading the list, and connecting to and reading each database;
	// <= 0: DefaultDBTimeout.
	DBTimeout time.Duration
	// Log receives a warning per skipped database; nil: slog.Default().
	Log *slog.Logger
}

// Collect reads the statistics. Stats.CollectedAt is the wall time at the end.
func Collect(ctx context.Context, connect Connector, o Options) (extstats.Stats, error) {
	if o.MaxDatabases <= 0 {
		o.MaxDatabases = DefaultMaxDatabases
	}
	if o.DBTimeout <= 0 {
		o.DBTimeout = DefaultDBTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	dbs, err := listDatabases(ctx, connect, o)
	if err != nil {
		return extstats.Stats{}, fmt.Errorf("list databases: %w", err)
	}
	var t extstats.Tally
	var firstErr error
	for _, db := range dbs {
		exts, err := readDatabase(ctx, connect, db, o.DBTimeout)
		if ctx.Err() != nil {
			return extstats.Stats{}, ctx.Err()
		}
		if err != nil {
			o.Log.Warn("installed extensions: skipping a database that cannot be read", "database", db, "err", err)
			t.SkipDatabase()
			if firstErr == nil {
				firstErr = fmt.Errorf("database %q: %w", db, err)
			}
			continue
		}
		t.AddDatabase(exts)
	}
	if read, skipped := t.Databases(); read == 0 && skipped > 0 {
		return extstats.Stats{}, fmt.Errorf("none of the %d databases could be read: %w", skipped, firstErr)
	}
	return t.Stats(time.Now()), nil
}

func listDatabases(ctx context.Context, connect Connector, o Options) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.DBTimeout)
	defer cancel()
	c, err := connect(ctx, "")
	if err != nil {
		return nil, err
	}
	defer closeConn(c)
	rows, err := c.Query(ctx, listDatabasesSQL, o.MaxDatabases)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func readDatabase(ctx context.Context, connect Connector, db string, timeout time.Duration) ([]extstats.Installed, error) {
	if db == "" {
		// Cannot happen (datname is never empty), but "" would mean the default database.
		return nil, errors.New("empty database name")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer closeConn(c)
	rows, err := c.Query(ctx, extensionsSQL)
	if err != nil {
		return nil, fmt.Errorf("read pg_extension: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (extstats.Installed, error) {
		var e extstats.Installed
		err := r.Scan(&e.Name, &e.Version, &e.Owner)
		return e, err
	})
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
