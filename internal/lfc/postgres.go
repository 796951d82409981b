package lfc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/pg"
)

// ErrNoNeonExtension: the LFC functions live in the neon extension, which this Postgres
// does not have (vanilla PostgreSQL, or the extension not created).
var ErrNoNeonExtension = errors.New("neon extension not installed")

// AppName is the application_name of the LFC connections.
const AppName = "compute_ctl:lfc"

// PG calls the neon extension's LFC functions, each call on a connection of its own (as
// Neon's maintenance client), after checking that the extension exists. A call's
// context cancels the running query on the server (a cancel request), not only the
// client's wait.
type PG struct {
	// Connstr reaches the compute's Postgres as the admin role.
	Connstr string
}

const neonExists = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'neon')`

// connect opens a connection whose context cancellation sends a cancel request, and
// checks for the neon extension.
func (p PG) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, neonExists).Scan(&ok); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("looking for the neon extension: %w", err)
	}
	if !ok {
		closeConn(conn)
		return nil, ErrNoNeonExtension
	}
	return conn, nil
}

// dial opens a connection whose context cancellation sends a cancel request.
func (p PG) dial(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pg.Config(p.Connstr, AppName)
	if err != nil {
		return nil, err
	}
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		// Send a cancel request at once, and drop the connection only if the query has
		// not ended a few seconds later (pgx's default drops it first, cancelling on the
		// way out).
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, CancelRequestDelay: 0, DeadlineDelay: 5 * time.Second}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres: %w", err)
	}
	return conn, nil
}

// CheckExtension returns ErrNoNeonExtension when the neon extension is not installed (an
// LFC operation would fail with it), nil when it is.
func (p PG) CheckExtension(ctx context.Context) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	closeConn(conn)
	return nil
}

// CancelOrphans cancels the queries of other LFC connections (application_name AppName)
// and returns how many it cancelled: a process that ran a prewarm and was killed (a
// watchdog restart sends SIGABRT) left its query running, and nothing else would end it
// until it completes.
func (p PG) CancelOrphans(ctx context.Context) (int, error) {
	conn, err := p.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_cancel_backend(pid))
		FROM pg_catalog.pg_stat_activity
		WHERE application_name = $1 AND usename = current_user AND pid <> pg_catalog.pg_backend_pid()
			AND state = 'active'`, AppName).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("cancelling leftover LFC queries: %w", err)
	}
	return n, nil
}

// closeTimeout bounds the goodbye of a connection (a Postgres that stopped answering
// must not hold the caller).
const closeTimeout = time.Second

// closeConn closes conn, waiting at most closeTimeout.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// LocalCacheState returns neon.get_local_cache_state(): nil when the LFC is empty (the
// function returns NULL) or the state has no bytes.
func (p PG) LocalCacheState(ctx context.Context) ([]byte, error) {
	conn, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	var state []byte
	if err := conn.QueryRow(ctx, "SELECT neon.get_local_cache_state()").Scan(&state); err != nil {
		return nil, fmt.Errorf("querying LFC state: %w", err)
	}
	if len(state) == 0 {
		return nil, nil
	}
	return state, nil
}

// PrewarmLocalCache runs neon.prewarm_local_cache(state). Cancelling ctx cancels the
// query on the server.
func (p PG) PrewarmLocalCache(ctx context.Context, state []byte) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "SELECT neon.prewarm_local_cache($1::bytea)", state); err != nil {
		return fmt.Errorf("loading LFC state into postgres: %w", err)
	}
	return nil
}

// PrewarmInfo returns the first three columns of neon.get_prewarm_info(): total,
// prewarmed and skipped pages (NULLs read as zero).
func (p PG) PrewarmInfo(ctx context.Context) (lfcstate.Progress, error) {
	conn, err := p.connect(ctx)
	if err != nil {
		return lfcstate.Progress{}, err
	}
	defer closeConn(conn)
	var total, prewarmed, skipped *int32
	if err := conn.QueryRow(ctx, "SELECT total_pages, prewarmed_pages, skipped_pages FROM neon.get_prewarm_info()").
		Scan(&total, &prewarmed, &skipped); err != nil {
		return lfcstate.Progress{}, fmt.Errorf("querying prewarm info: %w", err)
	}
	val := func(p *int32) int32 {
		if p == nil {
			return 0
		}
		return *p
	}
	return lfcstate.Progress{Total: val(total), Prewarmed: val(prewarmed), Skipped: val(skipped)}, nil
}
