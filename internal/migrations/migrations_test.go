package migrations

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const privRole = "neon_superuser"

var dbSeq atomic.Int64

// setup returns a connection, as cloud_admin, to a new database of the shared server, in
// which the privileged role exists (roles are cluster-wide; tests do not run in parallel
// because migration 2 alters every role).
func setup(t *testing.T) (*pgtest.Instance, *pgx.Conn) {
	t.Helper()
	inst := pgtest.Shared(t)
	ctx := context.Background()
	admin := connect(t, inst, "postgres")
	if _, err := admin.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'neon_superuser') THEN
			CREATE ROLE neon_superuser NOLOGIN CREATEDB CREATEROLE IN ROLE pg_read_all_data, pg_write_all_data;
		END IF; END $$`); err != nil {
		t.Fatalf("create privileged role: %v", err)
	}
	db := fmt.Sprintf("mig_%d", dbSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident(db)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return inst, connect(t, inst, db)
}

func connect(t *testing.T, inst *pgtest.Instance, db string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, inst.ConnstrDB(db))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func storedID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var id int
	if err := conn.QueryRow(context.Background(), "SELECT id FROM neon_migration.migration_id").Scan(&id); err != nil {
		t.Fatalf("read id: %v", err)
	}
	return id
}

// failCounter records OnFailure calls.
type failCounter struct{ ids []int }

func (f *failCounter) opts(logBuf *bytes.Buffer) Options {
	o := Options{PrivilegedRole: privRole, Logger: slog.New(slog.DiscardHandler), OnFailure: func(id int) { f.ids = append(f.ids, id) }}
	if logBuf != nil {
		o.Logger = slog.New(slog.NewTextHandler(logBuf, nil))
	}
	return o
}

func checkResult(t *testing.T, got Result, from, to int, applied, skipped []int) {
	t.Helper()
	if got.From != from || got.To != to || !slices.Equal(got.Applied, applied) || !slices.Equal(got.Skipped, skipped) || got.Failed != nil || got.Err != nil {
		t.Fatalf("result = %+v, want From=%d To=%d Applied=%v Skipped=%v and no failure", got, from, to, applied, skipped)
	}
}

func TestFreshDatabase(t *testing.T) {
	_, conn := setup(t)
	ctx := context.Background()
	// Roles migration 2 must change: a member of the privileged role without INHERIT, and
	// non-members with BYPASSRLS, one with a name that needs quoting.
	for _, s := range []string{
		`DROP ROLE IF EXISTS mig_member, mig_outsider, "mig Out'sider"`,
		`CREATE ROLE mig_member NOINHERIT IN ROLE neon_superuser`,
		`CREATE ROLE mig_outsider BYPASSRLS`,
		`CREATE ROLE "mig Out'sider" BYPASSRLS`,
		`ALTER ROLE neon_superuser NOINHERIT NOBYPASSRLS`,
		// Memberships are cluster-wide; undo those another test may have granted.
		`REVOKE pg_monitor, pg_signal_backend FROM neon_superuser`,
	} {
		exec(t, conn, s)
	}

	var fails failCounter
	res, err := Run(ctx, conn, fails.opts(nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < PG16 {
		checkResult(t, res, 0, 12, []int{1, 2, 4, 11, 12}, []int{3, 5, 6, 7, 8, 9, 10})
	} else {
		checkResult(t, res, 0, 12, []int{1, 2, 3, 4, 10, 11, 12}, []int{5, 6, 7, 8, 9})
	}
	if got := storedID(t, conn); got != 12 {
		t.Fatalf("stored id = %d, want 12", got)
	}
	if len(fails.ids) != 0 {
		t.Fatalf("OnFailure called with %v", fails.ids)
	}

	// Bookkeeping: schema owned by cloud_admin, no PUBLIC access.
	var owner string
	var publicUsage bool
	if err := conn.QueryRow(ctx, `SELECT nspowner::regrole::text,
		has_schema_privilege('public', 'neon_migration', 'USAGE') FROM pg_namespace WHERE nspname = 'neon_migration'`).Scan(&owner, &publicUsage); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if owner != "cloud_admin" || publicUsage {
		t.Fatalf("schema owner %s, public usage %v; want cloud_admin, false", owner, publicUsage)
	}

	roleAttrs := func(name string) (inherit, bypass bool) {
		t.Helper()
		if err := conn.QueryRow(ctx, "SELECT rolinherit, rolbypassrls FROM pg_roles WHERE rolname = $1", name).Scan(&inherit, &bypass); err != nil {
			t.Fatalf("role %s: %v", name, err)
		}
		return inherit, bypass
	}
	if inh, byp := roleAttrs(privRole); !inh || !byp {
		t.Errorf("%s: inherit=%v bypassrls=%v, want true true (migrations 1, 2)", privRole, inh, byp)
	}
	if inh, _ := roleAttrs("mig_member"); !inh {
		t.Errorf("mig_member: inherit=false, want true (migration 2)")
	}
	for _, r := range []string{"mig_outsider", "mig Out'sider"} {
		if _, byp := roleAttrs(r); byp {
			t.Errorf("%s: bypassrls=true, want false (migration 2)", r)
		}
	}

	// Grants 4 and 12 with admin option, 11 by function signature.
	for _, granted := range []string{"pg_monitor", "pg_signal_backend"} {
		var admin bool
		err := conn.QueryRow(ctx, `SELECT admin_option FROM pg_auth_members
			WHERE roleid = $1::regrole AND member = $2::regrole`, granted, privRole).Scan(&admin)
		if err != nil || !admin {
			t.Errorf("%s granted to %s with admin option: admin=%v err=%v", granted, privRole, admin, err)
		}
	}
	var canShow bool
	if err := conn.QueryRow(ctx, `SELECT has_function_privilege($1, 'pg_catalog.pg_show_replication_origin_status()', 'EXECUTE')`, privRole).Scan(&canShow); err != nil || !canShow {
		t.Errorf("EXECUTE on pg_show_replication_origin_status(): %v %v", canShow, err)
	}
	if version >= PG16 {
		for _, q := range []string{
			`SELECT pg_has_role($1, 'pg_create_subscription', 'MEMBER')`,
			`SELECT has_function_privilege($1, 'pg_catalog.pg_log_standby_snapshot()', 'EXECUTE')`,
		} {
			var ok bool
			if err := conn.QueryRow(ctx, q, privRole).Scan(&ok); err != nil || !ok {
				t.Errorf("%s: %v %v", q, ok, err)
			}
		}
	}

	// A second run applies nothing.
	res, err = Run(ctx, conn, fails.opts(nil))
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	checkResult(t, res, 12, 12, nil, nil)
	if got := storedID(t, conn); got != 12 || len(fails.ids) != 0 {
		t.Fatalf("after re-run: id %d, failures %v", got, fails.ids)
	}
}

// TestContinuesFromComputeCtl: a database whose bookkeeping compute_ctl created and left at
// id 4 continues with 5.
func TestContinuesFromComputeCtl(t *testing.T) {
	_, conn := setup(t)
	ctx := context.Background()
	exec(t, conn, "CREATE SCHEMA neon_migration")
	exec(t, conn, "CREATE TABLE neon_migration.migration_id (key INT NOT NULL PRIMARY KEY, id bigint NOT NULL DEFAULT 0)")
	exec(t, conn, "INSERT INTO neon_migration.migration_id VALUES (0, 4)")
	// Migration 1 must not run again: its effect is undone here and must stay undone.
	exec(t, conn, "ALTER ROLE neon_superuser NOBYPASSRLS")

	var fails failCounter
	res, err := Run(ctx, conn, fails.opts(nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.From != 4 || res.To != 12 || slices.Contains(res.Applied, 4) || !slices.Contains(res.Applied, 11) || !slices.Contains(res.Skipped, 5) || res.Failed != nil {
		t.Fatalf("result %+v, want 5..12 run", res)
	}
	if got := storedID(t, conn); got != 12 {
		t.Fatalf("stored id %d, want 12", got)
	}
	var bypass bool
	if err := conn.QueryRow(ctx, "SELECT rolbypassrls FROM pg_roles WHERE rolname = $1", privRole).Scan(&bypass); err != nil {
		t.Fatal(err)
	}
	if bypass {
		t.Fatalf("migration 1 ran again although compute_ctl had stored id 4")
	}
}

// TestFailureStopsAndResumes: a migration 4 whose SQL fails leaves nothing behind and the
// id at 3, stops the list, is logged and reported, and the next run with the good list
// continues from there. (TestFailedIDBumpRollsBack covers the shared transaction.)
func TestFailureStopsAndResumes(t *testing.T) {
	_, conn := setup(t)
	ctx := context.Background()

	bad := slices.Clone(All)
	bad[3].SQL = func(string) string {
		return "CREATE TABLE public.mig_probe (); SELECT pg_catalog.no_such_function()"
	}
	var logs bytes.Buffer
	var fails failCounter
	res, err := runList(ctx, conn, bad, fails.opts(&logs))
	if err != nil {
		t.Fatalf("runList returned a Run error for a migration failure: %v", err)
	}
	if res.Failed == nil || *res.Failed != 4 || res.Err == nil || res.From != 0 || res.To != 3 {
		t.Fatalf("result %+v, want failure of 4 after 1..3", res)
	}
	if !strings.Contains(res.Err.Error(), "no_such_function") {
		t.Fatalf("error %q does not name the cause", res.Err)
	}
	if !slices.Equal(fails.ids, []int{4}) {
		t.Fatalf("OnFailure calls %v, want [4]", fails.ids)
	}
	if got := storedID(t, conn); got != 3 {
		t.Fatalf("stored id %d, want 3", got)
	}
	var probe bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('public.mig_probe') IS NOT NULL").Scan(&probe); err != nil {
		t.Fatal(err)
	}
	if probe {
		t.Fatalf("the failed migration's transaction was not rolled back: public.mig_probe exists")
	}
	line := logs.String()
	for _, want := range []string{"level=ERROR", "id=4", `name="` + All[3].Name + `"`, "no_such_function"} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s:\n%s", want, line)
		}
	}
	res, err = Run(ctx, conn, fails.opts(nil))
	if err != nil {
		t.Fatalf("Run after failure: %v", err)
	}
	if res.From != 3 || res.To != 12 || res.Failed != nil || !slices.Equal(res.Applied[:1], []int{4}) {
		t.Fatalf("result %+v, want 4..12 with 4 applied", res)
	}
	if got := storedID(t, conn); got != 12 || len(fails.ids) != 1 {
		t.Fatalf("stored id %d, failures %v; want 12, [4]", got, fails.ids)
	}
}

// TestBookkeepingFailure: Run's own error is for bookkeeping, e.g. an admin role that does
// not exist; nothing is reported as a migration failure then.
func TestBookkeepingFailure(t *testing.T) {
	_, conn := setup(t)
	var fails failCounter
	opts := fails.opts(nil)
	opts.AdminRole = "no_such_admin"
	_, err := Run(context.Background(), conn, opts)
	if err == nil || !strings.Contains(err.Error(), "bookkeeping") {
		t.Fatalf("err = %v, want a bookkeeping error", err)
	}
	if len(fails.ids) != 0 {
		t.Fatalf("OnFailure called: %v", fails.ids)
	}
	if _, err := Run(context.Background(), conn, Options{}); err == nil {
		t.Fatalf("empty privileged role accepted")
	}
}

// TestQuotedPrivilegedRole runs the whole list for a privileged role whose name needs
// quoting, including migration 2's regrole literal.
func TestQuotedPrivilegedRole(t *testing.T) {
	_, conn := setup(t)
	ctx := context.Background()
	// Unique names: the grants made here keep the roles from being dropped.
	n := dbSeq.Load()
	odd := fmt.Sprintf(`Mig "Odd" Sup'er\%d`, n)
	member := fmt.Sprintf("mig_odd_member_%d", n)
	exec(t, conn, `CREATE ROLE `+ident(odd)+` NOINHERIT`)
	exec(t, conn, `CREATE ROLE `+ident(member)+` NOINHERIT IN ROLE `+ident(odd))

	var fails failCounter
	opts := fails.opts(nil)
	opts.PrivilegedRole = odd
	res, err := Run(ctx, conn, opts)
	if err != nil || res.Failed != nil || res.To != 12 {
		t.Fatalf("Run: %+v %v", res, err)
	}
	var inherit, bypass, monitorAdmin bool
	if err := conn.QueryRow(ctx, `SELECT r.rolinherit, r.rolbypassrls,
		EXISTS (SELECT FROM pg_auth_members WHERE roleid = 'pg_monitor'::regrole AND member = r.oid AND admin_option)
		FROM pg_roles r WHERE rolname = $1`, odd).Scan(&inherit, &bypass, &monitorAdmin); err != nil {
		t.Fatal(err)
	}
	if !inherit || !bypass || !monitorAdmin {
		t.Fatalf("%s: inherit=%v bypassrls=%v pg_monitor admin=%v; want all true", odd, inherit, bypass, monitorAdmin)
	}
	if err := conn.QueryRow(ctx, `SELECT rolinherit FROM pg_roles WHERE rolname = $1`, member).Scan(&inherit); err != nil || !inherit {
		t.Fatalf("%s inherit=%v err=%v, want true", member, inherit, err)
	}
}

// TestFailedIDBumpRollsBack: the migration's SQL and the id bump share one transaction, so
// when the bump fails (a trigger rejects id 4 here) the SQL's effect is rolled back too.
func TestFailedIDBumpRollsBack(t *testing.T) {
	_, conn := setup(t)
	ctx := context.Background()
	exec(t, conn, "CREATE SCHEMA neon_migration")
	exec(t, conn, "CREATE TABLE neon_migration.migration_id (key INT NOT NULL PRIMARY KEY, id bigint NOT NULL DEFAULT 0)")
	exec(t, conn, `CREATE FUNCTION public.mig_reject_4() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.id = 4 THEN RAISE EXCEPTION 'id 4 rejected'; END IF; RETURN NEW; END $$`)
	exec(t, conn, `CREATE TRIGGER mig_reject_4 BEFORE UPDATE ON neon_migration.migration_id
		FOR EACH ROW EXECUTE FUNCTION public.mig_reject_4()`)

	probe := slices.Clone(All)
	probe[3].SQL = func(string) string { return "CREATE TABLE public.mig_probe ()" }
	var fails failCounter
	res, err := runList(ctx, conn, probe, fails.opts(nil))
	if err != nil {
		t.Fatalf("runList: %v", err)
	}
	if res.Failed == nil || *res.Failed != 4 || res.To != 3 || !strings.Contains(fmt.Sprint(res.Err), "id 4 rejected") {
		t.Fatalf("result %+v, want failure of 4 from the id bump", res)
	}
	if got := storedID(t, conn); got != 3 {
		t.Fatalf("stored id %d, want 3", got)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('public.mig_probe') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("migration 4's SQL committed although its id bump failed")
	}

	exec(t, conn, "DROP TRIGGER mig_reject_4 ON neon_migration.migration_id")
	res, err = runList(ctx, conn, probe, fails.opts(nil))
	if err != nil || res.Failed != nil || res.To != 12 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	if err := conn.QueryRow(ctx, "SELECT to_regclass('public.mig_probe') IS NOT NULL").Scan(&exists); err != nil || !exists {
		t.Fatalf("migration 4 did not run on the second try: %v %v", exists, err)
	}
}
