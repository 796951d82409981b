// Package pg opens the maintenance connections compute-tools makes to its own Postgres
// (pgx, normally over the unix socket), quotes identifiers and literals, and prepares
// "quiet" sessions in which password DDL never reaches the server log, pg_stat_activity or
// pg_stat_statements. A connection to the packaged socket directory follows the running
// server's socket when the port asked for has none there (socket.go: the spec moved
// Postgres to a port it listens on only after a restart).
package pg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// StartupOptions are the `options` startup parameter every maintenance connection sends,
// as Neon's compute_ctl does: writes allowed even if the default is read-only, a known
// search_path, no statement timeout, and no pgaudit logging of our own statements
// (pgaudit.log is accepted as an inert placeholder when pgaudit is not loaded). Neon also
// sends `-c role=cloud_admin`; we connect as that role already, so it is left out.
const StartupOptions = "-c default_transaction_read_only=off -c search_path=public -c statement_timeout=0 -c pgaudit.log=none"

// ApplyAppName is the application_name of the sessions that apply the spec (compute_ctl's
// maintenance client).
const ApplyAppName = "compute_ctl:apply_config"

// DDLOptions are added to StartupOptions on the sessions that run the spec's DDL (ApplyConfig,
// ConnectApply): the neon extension forwards role and database DDL to the control plane
// unless neon.forward_ddl is off, and the control plane already knows what the spec holds.
// compute_ctl sends `SET neon.forward_ddl = false` on every maintenance session; a startup
// option is the same session setting without a round trip. Without the neon library
// loaded, PostgreSQL (15 too) takes it as an inert placeholder setting; with it loaded the
// setting exists (its prefix is reserved then, so no other neon.* name could be mistaken).
const DDLOptions = "-c neon.forward_ddl=false"

// Config parses connstr and applies appName and StartupOptions. Any `options` already in
// connstr are appended after ours, so they win.
func Config(connstr, appName string) (*pgx.ConnConfig, error) {
	return config(connstr, appName, StartupOptions)
}

// ApplyConfig is Config for a session that runs the spec's DDL: ApplyAppName, and
// DDLOptions after StartupOptions.
func ApplyConfig(connstr string) (*pgx.ConnConfig, error) {
	return config(connstr, ApplyAppName, StartupOptions+" "+DDLOptions)
}

func config(connstr, appName, opts string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(connstr)
	if err != nil {
		// pgx's parse errors quote the connection string, and its password redaction is
		// best effort; say nothing about the text.
		return nil, errors.New("parse connection string: not a valid postgres URL or key=value list")
	}
	if appName != "" {
		cfg.RuntimeParams["application_name"] = appName
	}
	if extra := strings.TrimSpace(cfg.RuntimeParams["options"]); extra != "" {
		opts += " " + extra
	}
	cfg.RuntimeParams["options"] = opts
	cfg.DialFunc = followLiveSocket(cfg.DialFunc)
	return cfg, nil
}

// Connect opens a connection with Config and makes sure standard_conforming_strings is on
// (Literal relies on it).
func Connect(ctx context.Context, connstr, appName string) (*pgx.Conn, error) {
	cfg, err := Config(connstr, appName)
	if err != nil {
		return nil, err
	}
	return connect(ctx, cfg)
}

// ConnectApply is Connect with ApplyConfig: the session for the spec's DDL.
func ConnectApply(ctx context.Context, connstr string) (*pgx.Conn, error) {
	cfg, err := ApplyConfig(connstr)
	if err != nil {
		return nil, err
	}
	return connect(ctx, cfg)
}

func connect(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := ensureStandardStrings(ctx, conn); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

func ensureStandardStrings(ctx context.Context, conn *pgx.Conn) error {
	if conn.PgConn().ParameterStatus("standard_conforming_strings") == "on" {
		return nil
	}
	if _, err := conn.Exec(ctx, "SET standard_conforming_strings = on"); err != nil {
		return fmt.Errorf("set standard_conforming_strings: %w", err)
	}
	if v := conn.PgConn().ParameterStatus("standard_conforming_strings"); v != "on" {
		return fmt.Errorf("standard_conforming_strings is %q after SET", v)
	}
	return nil
}

// Ident quotes name as an SQL identifier.
func Ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// ErrNUL is returned for text that Postgres cannot hold.
var ErrNUL = errors.New("text contains a NUL byte")

// Literal quotes s as an SQL string literal ('…' with ' doubled). It assumes
// standard_conforming_strings=on, which Connect guarantees. The error never quotes s.
func Literal(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", ErrNUL
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// QuietSession makes the rest of the session quiet so that statements carrying passwords
// never leave it: not in the server log (log_statement and the other log_* settings), not
// even when they fail; not in pg_stat_activity (track_activities off, which also clears
// the last query the view shows for this backend); and not in pg_stat_statements, which
// any pg_monitor member reads (pg_stat_statements.track none and track_utility off, when
// the library is loaded), nor in pgaudit's log. It needs a superuser session (these
// settings are superuser-only); it fails rather than leave any of them on.
func QuietSession(ctx context.Context, conn *pgx.Conn) error {
	stmts := []string{
		"SET log_statement = 'none'",
		"SET log_min_duration_statement = -1",
		"SET log_min_duration_sample = -1",
		"SET log_transaction_sample_rate = 0",
		"SET log_min_error_statement = 'panic'",
		"SET track_activities = off",
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("quiet session: %s: %w", s, err)
		}
	}
	// pgaudit.log and pg_stat_statements.* are real settings only when their library is
	// loaded; placeholders are not in pg_settings.
	var audit, pgss bool
	if err := conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE name = 'pgaudit.log'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE name = 'pg_stat_statements.track_utility')`).Scan(&audit, &pgss); err != nil {
		return fmt.Errorf("quiet session: check pgaudit and pg_stat_statements: %w", err)
	}
	var more []string
	if audit {
		more = append(more, "SET pgaudit.log = 'none'")
	}
	if pgss {
		more = append(more, "SET pg_stat_statements.track = 'none'", "SET pg_stat_statements.track_utility = off")
	}
	for _, s := range more {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("quiet session: %s: %w", s, err)
		}
	}
	return nil
}
