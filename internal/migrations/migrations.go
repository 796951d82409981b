// Package migrations runs compute-tools' append-only list of catalog migrations in the
// compute's main database, with the same effects and the same bookkeeping as Neon's
// compute_ctl (table neon_migration.migration_id), so a compute that compute_ctl already
// migrated continues from the id it stored.
//
// Each migration runs in its own transaction together with the id bump. The first failure
// stops the list; it is logged, reported through Options.OnFailure (for a metric) and
// returned in Result, but it is not an error of Run: startup must not fail because of it.
package migrations

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/paths"
)

// DefaultAdminRole owns schema neon_migration unless Options.AdminRole says otherwise.
const DefaultAdminRole = paths.DefaultAdminRole

// Options configures Run.
type Options struct {
	// PrivilegedRole is the role the migrations grant to (Neon's neon_superuser). It must
	// exist. Required.
	PrivilegedRole string
	// AdminRole owns schema neon_migration; DefaultAdminRole if empty.
	AdminRole string
	// Logger receives progress and the failure; slog.Default() if nil.
	Logger *slog.Logger
	// OnFailure, if set, is called with the id of the migration that failed (for the
	// compute_ctl_db_migration_failed_total{migration_id} counter).
	OnFailure func(id int)
}

// Result says what a Run did.
type Result struct {
	// From is the id stored before the run; To the id stored after it.
	From, To int
	// Applied lists the ids whose SQL ran and committed.
	Applied []int
	// Skipped lists the ids that only bumped the id (superseded entries and entries that
	// need a newer server).
	Skipped []int
	// Failed is the id of the migration that failed and stopped the list, nil if none.
	Failed *int
	// Err is that migration's error.
	Err error
}

// Run brings the database conn is connected to up to date with All. The returned error is
// only for bookkeeping failures (the neon_migration schema and table, reading the current
// id or the server version) and for ctx ending; a failing migration is reported in Result.
func Run(ctx context.Context, conn *pgx.Conn, opts Options) (Result, error) {
	return runList(ctx, conn, All, opts)
}

func runList(ctx context.Context, conn *pgx.Conn, list []Migration, opts Options) (Result, error) {
	if opts.PrivilegedRole == "" {
		return Result{}, errors.New("migrations: privileged role name is empty")
	}
	if opts.AdminRole == "" {
		opts.AdminRole = DefaultAdminRole
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	// Fast path, taken at every restart of a migrated compute: everything is applied, so
	// neither the bookkeeping DDL nor anything else needs to run (it would only rewrite the
	// catalog while the compute serves its first queries).
	if done, err := allApplied(ctx, conn, len(list)); err == nil && done {
		return Result{From: len(list), To: len(list)}, nil
	}
	if err := bookkeeping(ctx, conn, opts.AdminRole); err != nil {
		return Result{}, err
	}
	var current int64
	if err := conn.QueryRow(ctx, "SELECT id FROM neon_migration.migration_id WHERE key = 0").Scan(&current); err != nil {
		return Result{}, fmt.Errorf("read migration id: %w", err)
	}
	var serverVersion int
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.current_setting('server_version_num')::int").Scan(&serverVersion); err != nil {
		return Result{}, fmt.Errorf("read server version: %w", err)
	}

	res := Result{From: int(current), To: int(current)}
	if pending := len(list) - int(current); pending > 0 {
		log.Info("running migrations", "from", current, "pending", pending)
	}
	for _, m := range list {
		if int64(m.ID) <= current {
			continue
		}
		noop := m.Skip || m.SQL == nil || serverVersion < m.MinPGVersion
		sql := ""
		if !noop {
			sql = m.SQL(opts.PrivilegedRole)
		}
		if err := apply(ctx, conn, m.ID, sql); err != nil {
			if ctx.Err() != nil {
				// Shutting down is not a migration failure.
				return res, fmt.Errorf("migration %d: %w", m.ID, ctx.Err())
			}
			id := m.ID
			res.Failed, res.Err = &id, err
			log.Error("migration failed; later migrations not run", "id", m.ID, "name", m.Name, "err", err)
			if opts.OnFailure != nil {
				opts.OnFailure(m.ID)
			}
			return res, nil
		}
		res.To = m.ID
		if noop {
			res.Skipped = append(res.Skipped, m.ID)
			log.Debug("migration skipped", "id", m.ID, "name", m.Name)
		} else {
			res.Applied = append(res.Applied, m.ID)
			log.Info("migration applied", "id", m.ID, "name", m.Name)
		}
	}
	return res, nil
}

// bookkeeping creates schema neon_migration and its one-row table if missing, exactly as
// compute_ctl does, so either program can continue the other's list.
func bookkeeping(ctx context.Context, conn *pgx.Conn, admin string) error {
	stmts := []string{
		"CREATE SCHEMA IF NOT EXISTS neon_migration",
		"CREATE TABLE IF NOT EXISTS neon_migration.migration_id (key INT NOT NULL PRIMARY KEY, id bigint NOT NULL DEFAULT 0)",
		"INSERT INTO neon_migration.migration_id VALUES (0, 0) ON CONFLICT DO NOTHING",
		"ALTER SCHEMA neon_migration OWNER TO " + ident(admin),
		"REVOKE ALL ON SCHEMA neon_migration FROM PUBLIC",
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("migration bookkeeping: %w", err)
		}
	}
	return nil
}

// apply runs sql (nothing if empty) and stores id, in one transaction.
func apply(ctx context.Context, conn *pgx.Conn, id int, sql string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	if sql != "" {
		// No arguments: pgx sends a simple query, so an entry may hold several statements.
		if _, err := tx.Exec(ctx, sql); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE neon_migration.migration_id SET id = $1", int64(id)); err != nil {
		return fmt.Errorf("store id: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// allApplied reports whether the migration table exists and its id has reached n. Any
// error (no schema, no table yet) means "not known to be done".
func allApplied(ctx context.Context, conn *pgx.Conn, n int) (bool, error) {
	var id *int64
	err := conn.QueryRow(ctx, `SELECT (SELECT id FROM neon_migration.migration_id WHERE key = 0)
		WHERE pg_catalog.to_regclass('neon_migration.migration_id') IS NOT NULL`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return id != nil && *id >= int64(n), nil
}
