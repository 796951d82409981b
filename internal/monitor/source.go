package monitor

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier is what PGSource needs from a connection; *pgx.Conn has it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Source is what one sample reads from Postgres: the reference's five queries, one method
// each. PGSource is the real one; tests of the rules use a fake.
type Source interface {
	// DatabaseStats is the sum of active_time and sessions over pg_stat_database, the
	// system databases left out (only read with the stats-delta rule).
	DatabaseStats(ctx context.Context) (DatabaseStats, error)
	// Backends are the client backends of every user but the admin role, the caller's
	// own connection left out.
	Backends(ctx context.Context) ([]Backend, error)
	// Walsenders counts the walsenders other than walproposer.
	Walsenders(ctx context.Context) (int64, error)
	// Subscriptions counts the subscriptions with a running worker (pid is not null).
	Subscriptions(ctx context.Context) (int64, error)
	// AutovacuumWorkers counts the running autovacuum workers.
	AutovacuumWorkers(ctx context.Context) (int64, error)
}

// DatabaseStats are the pg_stat_database counters the stats-delta rule compares.
type DatabaseStats struct {
	ActiveTime float64 // sum(active_time), milliseconds
	Sessions   int64   // sum(sessions)
}

// Backend is one row of pg_stat_activity as the backends rule sees it. State is nil when
// Postgres shows no state (a row the monitor may not see); StateChange is nil when Postgres
// has none.
type Backend struct {
	State       *string
	StateChange *time.Time
}

// The reference's queries (compute_tools/src/monitor.rs), with two changes: state_change
// is read as a timestamptz (an absolute time, whatever the session's TimeZone) rather
// than as text formatted in the session's time zone and labelled "Z", and the admin role
// is a parameter rather than the literal 'cloud_admin'.
const (
	statsQuery = `SELECT coalesce(sum(active_time), 0.0)::float8 AS total_active_time,
	coalesce(sum(sessions), 0)::bigint AS total_sessions
FROM pg_stat_database
WHERE datname NOT IN ('postgres', 'template0', 'template1')`
	backendsQuery = `SELECT state, state_change
FROM pg_stat_activity
WHERE backend_type = 'client backend'
	AND pid != pg_backend_pid()
	AND usename != $1`
	walsendersQuery    = `select count(*) from pg_stat_replication where application_name != 'walproposer'`
	subscriptionsQuery = `select count(*) from pg_stat_subscription where pid is not null`
	autovacuumQuery    = `select count(*) from pg_stat_activity where backend_type = 'autovacuum worker'`
)

// PGSource runs the queries on a connection.
type PGSource struct {
	Conn Querier
	// AdminRole is the role whose sessions are not user activity (compute-tools' own
	// connections, the control plane's); the reference hard-codes cloud_admin.
	AdminRole string
}

// DatabaseStats implements Source.
func (s PGSource) DatabaseStats(ctx context.Context) (DatabaseStats, error) {
	var st DatabaseStats
	if err := s.Conn.QueryRow(ctx, statsQuery).Scan(&st.ActiveTime, &st.Sessions); err != nil {
		return DatabaseStats{}, fmt.Errorf("database statistics: %w", err)
	}
	return st, nil
}

// Backends implements Source.
func (s PGSource) Backends(ctx context.Context) ([]Backend, error) {
	rows, err := s.Conn.Query(ctx, backendsQuery, s.AdminRole)
	if err != nil {
		return nil, fmt.Errorf("backends: %w", err)
	}
	var out []Backend
	for rows.Next() {
		var b Backend
		if err := rows.Scan(&b.State, &b.StateChange); err != nil {
			rows.Close()
			return nil, fmt.Errorf("backends: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("backends: %w", err)
	}
	return out, nil
}

// Walsenders implements Source.
func (s PGSource) Walsenders(ctx context.Context) (int64, error) {
	return s.count(ctx, "walsenders", walsendersQuery)
}

// Subscriptions implements Source.
func (s PGSource) Subscriptions(ctx context.Context) (int64, error) {
	return s.count(ctx, "subscriptions", subscriptionsQuery)
}

// AutovacuumWorkers implements Source.
func (s PGSource) AutovacuumWorkers(ctx context.Context) (int64, error) {
	return s.count(ctx, "autovacuum workers", autovacuumQuery)
}

func (s PGSource) count(ctx context.Context, what, query string) (int64, error) {
	var n int64
	if err := s.Conn.QueryRow(ctx, query).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", what, err)
	}
	return n, nil
}
