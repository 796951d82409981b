// Package pgops carries out, against the compute's running Postgres, what compute-api's
// Postgres routes do, as Neon's compute_ctl does: the writability check (POST
// /check_writability), the pg_stat_statements insights (GET /insights), the roles and
// databases of the catalog (GET /dbs_and_roles), the schema dump (GET /database_schema,
// pg_dump streamed through internal/execx), and local_proxy's extension install (POST
// /extensions) and schema grants (POST /grants). It connects as the admin role of the
// admin connection string (internal/pg's startup options), one short connection per call,
// with compute_ctl's application names. internal/control calls it through a narrow
// interface; the wire types are in pgopswire.
//
// Where it differs from compute_ctl: a pg_stat_statements that is missing (not created,
// or not preloaded) gives an empty insights list as there, but any other query failure is
// an error rather than an empty list; a schema dump is "database does not exist" when
// pg_dump printed nothing and the catalog has no such database (compute_ctl matches the
// English text of pg_dump's first stderr line, which we keep only as the fallback when
// the catalog cannot be read); pg_dump failing after its output began is an error of the
// stream (the HTTP answer is cut off) rather than a short dump that looks complete.
package pgops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
)

// Application names of the connections, compute_ctl's.
const (
	AppWritability = "compute_ctl:availability_checker"
	AppInsights    = "compute_ctl:collect_insights"
	AppCatalog     = "compute_ctl:get_dbs_and_roles"
	AppExtension   = "compute_ctl:install_extension"
	AppGrants      = "compute_ctl:set_role_grants"
)

// SQLSTATEs this package looks at.
const (
	sqlstateDiskFull         = "53100"
	sqlstateUndefinedTable   = "42P01"
	sqlstateNotInPrereqState = "55000"
)

// Ops runs the operations. Its methods are safe for concurrent use.
type Ops struct {
	base   *pgx.ConnConfig
	pgDump string
	log    *slog.Logger
}

// New parses the admin connection string connstr (whose user is the admin role, left out
// of the insights) once; pgbin is the postgres binary, beside which pg_dump lives.
func New(connstr, pgbin string, log *slog.Logger) (*Ops, error) {
	cfg, err := pg.Config(connstr, "")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Ops{base: cfg, pgDump: paths.Sibling(pgbin, "pg_dump"), log: log}, nil
}

// AdminRole is the role of the connection string.
func (o *Ops) AdminRole() string { return o.base.User }

// connect opens a connection to database db ("" = the connection string's) as the admin
// role, named app.
func (o *Ops) connect(ctx context.Context, db, app string) (*pgx.Conn, error) {
	cfg := o.base.Copy()
	cfg.RuntimeParams["application_name"] = app
	if db != "" {
		cfg.Database = db
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return c, nil
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// CheckWritability upserts the health_check row (the table the spec apply creates in the
// connection string's database). A full disk (SQLSTATE 53100) counts as writable, as in
// compute_ctl: the timeline takes writes, the tenant's quota is what is full.
func (o *Ops) CheckWritability(ctx context.Context) error {
	c, err := o.connect(ctx, "", AppWritability)
	if err != nil {
		return err
	}
	defer closeConn(c)
	_, err = c.Exec(ctx, "INSERT INTO public.health_check VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET updated_at = now()")
	if sqlstate(err) == sqlstateDiskFull {
		o.log.Warn("writability check: the tenant's disk is full; counted as writable", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("upsert health_check: %w", err)
	}
	return nil
}

// insightsQuery is compute_ctl's, with the admin role as a parameter (a role that does
// not exist leaves every row in).
const insightsQuery = `SELECT row_to_json(s)::text FROM pg_stat_statements s
WHERE s.userid NOT IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
ORDER BY (s.mean_exec_time + s.mean_plan_time) DESC
LIMIT 100`

// Insights returns the 100 statements of pg_stat_statements with the highest mean
// planning plus execution time, of every user but the admin role. Without
// pg_stat_statements (the view does not exist, or the library is not preloaded) the list
// is empty, as in compute_ctl.
func (o *Ops) Insights(ctx context.Context) (pgopswire.Insights, error) {
	out := pgopswire.Insights{PgStatStatements: []json.RawMessage{}}
	c, err := o.connect(ctx, "", AppInsights)
	if err != nil {
		return out, err
	}
	defer closeConn(c)
	rows, err := c.Query(ctx, insightsQuery, o.base.User)
	if err == nil {
		for rows.Next() {
			var row string
			if err = rows.Scan(&row); err != nil {
				break
			}
			out.PgStatStatements = append(out.PgStatStatements, json.RawMessage(row))
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	switch code := sqlstate(err); {
	case err == nil:
		return out, nil
	case code == sqlstateUndefinedTable || code == sqlstateNotInPrereqState:
		o.log.Warn("insights: pg_stat_statements is not available; answering an empty list", "err", err)
		return pgopswire.Insights{PgStatStatements: []json.RawMessage{}}, nil
	}
	return pgopswire.Insights{}, fmt.Errorf("read pg_stat_statements: %w", err)
}

// DBsAndRoles reads every role of pg_authid (with its stored password hash) and every
// database of pg_database with its owner, restrict_conn and invalid, as compute_ctl does.
func (o *Ops) DBsAndRoles(ctx context.Context) (pgopswire.CatalogObjects, error) {
	out := pgopswire.CatalogObjects{Roles: []pgopswire.Role{}, Databases: []pgopswire.Database{}}
	c, err := o.connect(ctx, "", AppCatalog)
	if err != nil {
		return out, err
	}
	defer closeConn(c)
	rows, err := c.Query(ctx, "SELECT rolname, rolpassword FROM pg_catalog.pg_authid ORDER BY oid")
	if err != nil {
		return out, fmt.Errorf("read roles: %w", err)
	}
	for rows.Next() {
		var r pgopswire.Role
		if err := rows.Scan(&r.Name, &r.EncryptedPassword); err != nil {
			rows.Close()
			return out, fmt.Errorf("read roles: %w", err)
		}
		out.Roles = append(out.Roles, r)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read roles: %w", err)
	}
	// datconnlimit = -2 marks a database whose DROP DATABASE was interrupted (invalid).
	rows, err = c.Query(ctx, `SELECT datname, coalesce((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = datdba), ''),
	NOT datallowconn, datconnlimit = -2 FROM pg_catalog.pg_database ORDER BY datname`)
	if err != nil {
		return out, fmt.Errorf("read databases: %w", err)
	}
	for rows.Next() {
		var d pgopswire.Database
		if err := rows.Scan(&d.Name, &d.Owner, &d.RestrictConn, &d.Invalid); err != nil {
			rows.Close()
			return out, fmt.Errorf("read databases: %w", err)
		}
		out.Databases = append(out.Databases, d)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read databases: %w", err)
	}
	return out, nil
}

// InstallExtension installs extension ext at version in database db, or updates it to
// that version, as compute_ctl does (the version quoted as an identifier): nothing when
// that version is installed, ALTER EXTENSION ... UPDATE TO when another is, CREATE
// EXTENSION IF NOT EXISTS ... WITH VERSION otherwise. It returns the version.
func (o *Ops) InstallExtension(ctx context.Context, req pgopswire.ExtensionInstallRequest) (string, error) {
	c, err := o.connect(ctx, req.Database, AppExtension)
	if err != nil {
		return "", err
	}
	defer closeConn(c)
	var installed string
	err = c.QueryRow(ctx, "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1", req.Extension).Scan(&installed)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		q := "CREATE EXTENSION IF NOT EXISTS " + pg.Ident(req.Extension) + " WITH VERSION " + pg.Ident(req.Version)
		if _, err := c.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("create extension: %w", err)
		}
		o.log.Info("extension created", "extension", req.Extension, "database", req.Database, "version", req.Version)
	case err != nil:
		return "", fmt.Errorf("read installed version: %w", err)
	case installed == req.Version:
	default:
		q := "ALTER EXTENSION " + pg.Ident(req.Extension) + " UPDATE TO " + pg.Ident(req.Version)
		if _, err := c.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("update extension: %w", err)
		}
		o.log.Info("extension updated", "extension", req.Extension, "database", req.Database, "from", installed, "version", req.Version)
	}
	return req.Version, nil
}

// grantedQuery lists the privileges the schema's ACL gives a login role.
const grantedQuery = `SELECT acl.privilege_type FROM pg_catalog.pg_namespace n
JOIN LATERAL (SELECT * FROM pg_catalog.aclexplode(n.nspacl)) acl ON true
JOIN pg_catalog.pg_user u ON acl.grantee = u.usesysid
WHERE u.usename = $1 AND n.nspname = $2`

// SetRoleGrants grants the privileges on schema to role in database, as compute_ctl
// does: only those the schema's ACL does not already give the role (so that a read-only
// replica, where every privilege is in place, is not written to), in one GRANT.
func (o *Ops) SetRoleGrants(ctx context.Context, req pgopswire.SetRoleGrantsRequest) error {
	if pgopswire.SystemSchema(req.Schema) {
		return fmt.Errorf("schema %q is a system schema", req.Schema)
	}
	var want []string
	for _, p := range req.Privileges {
		if !p.Valid() {
			return fmt.Errorf("unknown privilege %q", p)
		}
		if !contains(want, string(p)) {
			want = append(want, string(p))
		}
	}
	c, err := o.connect(ctx, req.Database, AppGrants)
	if err != nil {
		return err
	}
	defer closeConn(c)
	rows, err := c.Query(ctx, grantedQuery, req.Role, req.Schema)
	if err != nil {
		return fmt.Errorf("read schema privileges: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read schema privileges: %w", err)
	}
	var missing []string
	for _, p := range want {
		if !contains(have, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// The privileges are keywords from a closed list (checked above), not input text.
	q := "GRANT " + strings.Join(missing, ", ") + " ON SCHEMA " + pg.Ident(req.Schema) + " TO " + pg.Ident(req.Role)
	if _, err := c.Exec(ctx, q); err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	o.log.Info("schema privileges granted", "database", req.Database, "schema", req.Schema, "role", req.Role, "privileges", missing)
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// DumpError is a schema dump that failed before its output began (pg_dump missing, or
// exiting without output for a reason other than a missing database).
type DumpError struct{ Err error }

func (e *DumpError) Error() string { return "failed to execute pg_dump: " + e.Err.Error() }

func (e *DumpError) Unwrap() error { return e.Err }

// firstChunk is how much of pg_dump's output DumpSchema reads before it answers.
const firstChunk = 32 << 10

// DumpSchema starts `pg_dump --schema-only` of database db (host, port and user from the
// connection string, the database in PGDATABASE so that any name works) and returns its
// output as a stream once the first bytes have come. Before that, a failure is
// pgopswire.ErrDatabaseNotFound or a *DumpError. The stream's Read returns an error
// (not io.EOF) when pg_dump fails after its output began; Close, which must be called,
// kills a pg_dump still running. pg_dump is killed as well when ctx ends.
func (o *Ops) DumpSchema(ctx context.Context, db string) (io.ReadCloser, error) {
	if db == "" {
		return nil, pgopswire.ErrDatabaseNotFound // no database has an empty name
	}
	ctx, cancel := context.WithCancel(ctx)
	env := []string{"PGDATABASE=" + db}
	var secrets []string
	if o.base.Password != "" {
		env = append(env, "PGPASSWORD="+o.base.Password)
		secrets = append(secrets, o.base.Password)
	}
	p, err := execx.Start(ctx, execx.Cmd{
		Path: o.pgDump,
		Args: []string{"--host", o.base.Host, "--port", strconv.Itoa(int(pg.LivePort(o.base.Host, o.base.Port))), "--username", o.base.User, "--schema-only"},
		Env:  env, Secrets: secrets, Log: o.log,
	})
	if err != nil {
		cancel()
		return nil, &DumpError{Err: err}
	}
	buf := make([]byte, firstChunk)
	var n int
	for n == 0 && err == nil {
		n, err = p.Stdout().Read(buf)
	}
	if n > 0 {
		return &dump{p: p, pending: buf[:n], cancel: cancel, log: o.log, db: db, start: time.Now()}, nil
	}
	defer cancel()
	_, werr := p.Wait()
	stderr := p.Stderr()
	if werr == nil {
		werr = errors.New("no output")
	}
	exists, cerr := o.DatabaseExists(ctx, db)
	if cerr != nil {
		o.log.Warn("schema dump: cannot tell whether the database exists", "err", cerr)
		exists = !strings.Contains(stderr, fmt.Sprintf("FATAL:  database %q does not exist", db))
	}
	if !exists {
		return nil, pgopswire.ErrDatabaseNotFound
	}
	return nil, &DumpError{Err: werr}
}

// DatabaseExists reports whether the catalog has database db (HEAD /database_schema,
// which answers as GET would without running pg_dump).
func (o *Ops) DatabaseExists(ctx context.Context, db string) (bool, error) {
	if db == "" {
		return false, nil // no database has an empty name
	}
	c, err := o.connect(ctx, "", AppCatalog)
	if err != nil {
		return false, err
	}
	defer closeConn(c)
	var ok bool
	err = c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)", db).Scan(&ok)
	return ok, err
}

// dump is a running pg_dump's output.
type dump struct {
	p       *execx.Process
	pending []byte
	cancel  context.CancelFunc
	log     *slog.Logger
	db      string
	start   time.Time
	n       int64
	closed  bool
}

func (d *dump) Read(b []byte) (int, error) {
	if len(d.pending) > 0 {
		n := copy(b, d.pending)
		d.pending = d.pending[n:]
		d.n += int64(n)
		return n, nil
	}
	n, err := d.p.Stdout().Read(b)
	d.n += int64(n)
	if errors.Is(err, io.EOF) {
		if _, werr := d.p.Wait(); werr != nil {
			return n, fmt.Errorf("pg_dump failed after %d bytes: %w", d.n, werr)
		}
	}
	return n, err
}

// Close kills pg_dump if it still runs, reaps it, and logs its stderr.
func (d *dump) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	d.cancel()
	_, err := d.p.Wait()
	if s := strings.TrimSpace(d.p.Stderr()); s != "" {
		d.log.Warn("pg_dump stderr", "database", d.db, "stderr", s)
	}
	d.log.Info("schema dump ended", "database", d.db, "bytes", d.n, "dump_ms", time.Since(d.start).Milliseconds(), "err", err)
	return nil
}
