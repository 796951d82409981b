package computeclient_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgops"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/pkg/computeclient"
)

// The routes that read or change the running Postgres and POST /promote, through the
// client, against the real handlers and controller over a real PostgreSQL 15
// (internal/pgtest) and internal/pgops; every answer checked against api/openapi.yaml.

// pgEnv is an env whose controller reaches inst through internal/pgops.
func pgEnv(t *testing.T, inst *pgtest.Instance) *env {
	t.Helper()
	ops, err := pgops.New(inst.Connstr(), filepath.Join(inst.BinDir, "postgres"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return newEnvDeps(t, func(d *control.Deps) { d.Postgres = ops })
}

func pgConnect(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connstr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func pgExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgBool(t *testing.T, c *pgx.Conn, sql string, args ...any) bool {
	t.Helper()
	var v bool
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// running moves the compute to running, a standalone primary.
func (e *env) running() {
	e.t.Helper()
	e.set(state.Init, nil)
	e.set(state.Running, func(r *state.Record) { r.Storage, r.Mode = spec.StorageStandalone, spec.ModeTypePrimary })
}

func TestPostgresRoutes(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	e := pgEnv(t, inst)
	ctx := context.Background()
	c := pgConnect(t, inst.Connstr())

	// Not running: 412 for the routes that need it.
	wantError(t, e.client.CheckWritability(ctx), 412, "invalid compute status: empty")
	_, err := e.client.Insights(ctx)
	wantError(t, err, 412, "invalid compute status: empty")
	_, err = e.internal.InstallExtension(ctx, computeclient.ExtensionInstallRequest{Extension: "hstore", Database: "postgres", Version: "1.8"})
	wantError(t, err, 412, "invalid compute status: empty")
	e.running()

	t.Run("check_writability", func(t *testing.T) {
		pgExec(t, c, "CREATE TABLE public.health_check (id serial PRIMARY KEY, updated_at timestamptz DEFAULT now())")
		if err := e.client.CheckWritability(ctx); err != nil {
			t.Fatal(err)
		}
		if !pgBool(t, c, "SELECT count(*) = 1 FROM health_check") {
			t.Fatal("no row written to health_check")
		}
	})

	t.Run("insights", func(t *testing.T) {
		pgExec(t, c, "CREATE EXTENSION pg_stat_statements")
		pgExec(t, c, "CREATE ROLE insights_app LOGIN")
		app := pgConnect(t, inst.TCPConnstr("insights_app", "", "postgres"))
		pgExec(t, app, "SELECT 1 AS client_marker_query")
		ins, err := e.client.Insights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, row := range ins.PgStatStatements {
			if strings.Contains(string(row), "client_marker_query") {
				found = strings.HasPrefix(string(row), "{") && strings.Contains(string(row), `"calls"`)
			}
		}
		if !found {
			t.Fatalf("the app's statement is not among the %d rows as an object", len(ins.PgStatStatements))
		}
	})

	t.Run("dbs_and_roles", func(t *testing.T) {
		pgExec(t, c, `CREATE ROLE "Client Role" LOGIN PASSWORD 'pw'`)
		pgExec(t, c, `CREATE DATABASE "client db" OWNER "Client Role" ALLOW_CONNECTIONS false`)
		dr, err := e.client.DbsAndRoles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var role *computeclient.CatalogRole
		for i := range dr.Roles {
			if dr.Roles[i].Name == "Client Role" {
				role = &dr.Roles[i]
			}
		}
		if role == nil || role.EncryptedPassword == nil || !strings.HasPrefix(*role.EncryptedPassword, "SCRAM-SHA-256$") || role.Options != nil {
			t.Fatalf("role %+v, want its SCRAM hash and null options", role)
		}
		var db *computeclient.CatalogDatabase
		for i := range dr.Databases {
			if dr.Databases[i].Name == "client db" {
				db = &dr.Databases[i]
			}
		}
		if db == nil || db.Owner != "Client Role" || !db.RestrictConn || db.Invalid {
			t.Fatalf("database %+v", db)
		}
	})

	t.Run("database_schema", func(t *testing.T) {
		const name = "schema db&x=1"
		pgExec(t, c, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		pgExec(t, pgConnect(t, inst.ConnstrDB(name)), "CREATE TABLE client_marker_table (id int PRIMARY KEY)")
		rc, err := e.client.DatabaseSchema(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		dump, err := io.ReadAll(rc)
		if cerr := rc.Close(); err != nil || cerr != nil {
			t.Fatalf("read %v, close %v", err, cerr)
		}
		if !strings.Contains(string(dump), "CREATE TABLE public.client_marker_table") || !strings.Contains(string(dump), "PostgreSQL database dump complete") {
			t.Fatalf("not the schema of %q:\n%s", name, dump)
		}
		_, err = e.client.DatabaseSchema(ctx, "no such db")
		wantError(t, err, 404, "database does not exist")
	})

	t.Run("extensions", func(t *testing.T) {
		pgExec(t, c, "CREATE DATABASE ext_db")
		for _, v := range []string{"1.7", "1.8"} { // created, then updated
			got, err := e.internal.InstallExtension(ctx, computeclient.ExtensionInstallRequest{Extension: "hstore", Database: "ext_db", Version: v})
			if err != nil || *got != (computeclient.ExtensionInstallResult{Extension: "hstore", Version: v}) {
				t.Fatalf("install %s: %+v, %v", v, got, err)
			}
			if !pgBool(t, pgConnect(t, inst.ConnstrDB("ext_db")), "SELECT extversion = $1 FROM pg_extension WHERE extname = 'hstore'", v) {
				t.Fatalf("hstore not at %s", v)
			}
		}
		_, err := e.internal.InstallExtension(ctx, computeclient.ExtensionInstallRequest{Extension: "hstore", Database: "ext_db", Version: "9.9"})
		if computeclient.StatusCode(err) != 500 || !strings.Contains(err.Error(), "failed to install extension: ") {
			t.Fatalf("impossible version: %v", err)
		}
	})

	t.Run("grants", func(t *testing.T) {
		pgExec(t, c, "CREATE DATABASE grants_db")
		pgExec(t, c, `CREATE ROLE "grants user" LOGIN`)
		dbc := pgConnect(t, inst.ConnstrDB("grants_db"))
		pgExec(t, dbc, `CREATE SCHEMA "my schema"`)
		req := computeclient.SetRoleGrantsRequest{Database: "grants_db", Schema: "my schema", Role: "grants user",
			Privileges: []computeclient.Privilege{computeclient.PrivilegeUsage, computeclient.PrivilegeCreate}}
		got, err := e.internal.SetRoleGrants(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got.Database != req.Database || got.Schema != req.Schema || got.Role != req.Role || len(got.Privileges) != 2 ||
			got.Privileges[0] != computeclient.PrivilegeUsage || got.Privileges[1] != computeclient.PrivilegeCreate {
			t.Fatalf("answer %+v, want the request echoed", got)
		}
		for _, p := range []string{"USAGE", "CREATE"} {
			if !pgBool(t, dbc, "SELECT has_schema_privilege('grants user', 'my schema', $1)", p) {
				t.Fatalf("%s not granted", p)
			}
		}
		req.Schema = "pg_catalog"
		_, err = e.internal.SetRoleGrants(ctx, req)
		wantError(t, err, 422, "")
		if msg := err.(*computeclient.Error).Message; !strings.Contains(msg, "system schema") {
			t.Fatalf("422 message %q", msg)
		}
		if pgBool(t, dbc, "SELECT has_schema_privilege('grants user', 'pg_catalog', 'CREATE')") {
			t.Fatal("CREATE granted on pg_catalog")
		}
	})
}

// POST /promote: 412 when not running, the 500 "not replica" of a primary decoded as
// the failed PromoteState and the *Error at once, then a real promotion of a standby.
func TestPromote(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	lsn, err := computeclient.ParseLsn("0/16B5A50")
	if err != nil {
		t.Fatal(err)
	}
	req := computeclient.PromoteRequest{Safekeepers: "sk-0:5454", WALFlushLSN: lsn}
	st, err := e.client.Promote(ctx, req)
	wantError(t, err, 412, "invalid compute status: empty")
	if st != nil {
		t.Fatalf("a state with the 412: %+v", st)
	}
	e.running()
	st, err = e.client.Promote(ctx, req)
	wantError(t, err, 500, "primary is not replica")
	if st == nil || *st != (computeclient.PromoteState{Status: computeclient.PromoteFailed, Error: "primary is not replica"}) {
		t.Fatalf("state %+v, want failed with the reason", st)
	}

	t.Run("standby", func(t *testing.T) {
		primary := pgtest.Start(t)
		standby := pgtest.StartStandby(t, primary)
		var dir string
		e := newEnvDeps(t, func(d *control.Deps) {
			dir = d.Store.(*state.Store).Dir()
			d.Promoter = promote.New(promote.Options{Connstr: standby.Connstr(), Interval: 20 * time.Millisecond, Retries: 1500})
			d.WritePendingConfig = func(raw []byte) error { return os.WriteFile(paths.PendingConfigFile(dir), raw, 0o600) }
			d.ReadAppliedConfig = func() ([]byte, error) { return os.ReadFile(paths.AppliedConfigFile(dir)) }
		})
		settings := compute.Settings{StateDir: dir, PGData: standby.DataDir, Connstr: standby.Connstr(), PrivilegedRole: "neon_superuser"}
		e.units.reconfigure = func() error {
			return compute.Configure(context.Background(), settings, &compute.Deps{Store: e.store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}
		cfg := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
		  "mode": "Replica", "cluster": {"roles": [], "databases": []}}}`
		if err := os.WriteFile(paths.AppliedConfigFile(dir), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		e.set(state.Init, nil)
		e.set(state.Running, func(r *state.Record) { r.Storage, r.Mode = spec.StorageStandalone, spec.ModeTypeReplica })

		pc := pgConnect(t, primary.Connstr())
		pgExec(t, pc, "CREATE TABLE promoted (id int)")
		var flush string
		if err := pc.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flush); err != nil {
			t.Fatal(err)
		}
		lsn, err := computeclient.ParseLsn(flush)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		st, err := e.client.Promote(cctx, computeclient.PromoteRequest{Safekeepers: "sk-0:5454", WALFlushLSN: lsn})
		if err != nil || *st != (computeclient.PromoteState{Status: computeclient.PromoteCompleted}) {
			t.Fatalf("promote: %+v, %v", st, err)
		}
		// Again: completed at once.
		if st, err := e.client.Promote(cctx, computeclient.PromoteRequest{Safekeepers: "other", WALFlushLSN: lsn}); err != nil || st.Status != computeclient.PromoteCompleted {
			t.Fatalf("second promote: %+v, %v", st, err)
		}
		if s, err := e.client.Status(ctx); err != nil || s.Status != computeclient.StatusRunning {
			t.Fatalf("status after promotion: %+v, %v", s, err)
		}
		pgExec(t, pgConnect(t, standby.Connstr()), "INSERT INTO promoted VALUES (1)")
	})
}
