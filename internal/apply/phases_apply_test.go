package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/jackc/pgx/v5"
)

func execAll(t *testing.T, conn *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := conn.Exec(context.Background(), q, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func qi(name string) string { return pgx.Identifier{name}.Sanitize() }

// mustApply applies s and then checks that nothing is left to do: DryRun plans nothing
// and a second Apply runs nothing.
func mustApply(t *testing.T, conn *pgx.Conn, s *spec.ComputeSpec, opts Options) Result {
	t.Helper()
	ctx := context.Background()
	res, err := Apply(ctx, conn, s, opts)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	left, err := DryRun(ctx, conn, s, opts)
	if err != nil {
		t.Fatalf("DryRun after Apply: %v", err)
	}
	if len(left) != 0 {
		var b strings.Builder
		for _, a := range left {
			fmt.Fprintf(&b, "  %s [%s]: %s\n", a.Phase, a.Database, a.SQL)
		}
		t.Fatalf("after Apply, DryRun still plans:\n%s", b.String())
	}
	again, err := Apply(ctx, conn, s, opts)
	if err != nil || again.Total != 0 {
		t.Fatalf("second Apply: %+v, %v; want nothing run", again, err)
	}
	return res
}

func dbExists(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func tableOwner(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var owner string
	if err := conn.QueryRow(context.Background(), `SELECT tableowner FROM pg_tables WHERE schemaname || '.' || tablename = $1`, table).Scan(&owner); err != nil {
		t.Fatalf("owner of %s: %v", table, err)
	}
	return owner
}

func TestApplyRenameRole(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	const from, to = "rn old", "Rn New ü"
	execAll(t, conn,
		`CREATE ROLE `+qi(from)+` LOGIN PASSWORD 'md5`+md5Hash("old-pass", from)+`'`,
		`CREATE DATABASE "rn db" OWNER `+qi(from))
	s := specOf([]spec.Role{{Name: to, EncryptedPassword: ptr(md5Hash("new-pass", to))}},
		[]spec.Database{{Name: "rn db", Owner: to}})
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaRenameRole, from, to)}
	res := mustApply(t, conn, s, Options{})
	if res.PerPhase[PhaseRenameRoles] != 1 || res.PerPhase[PhaseCreateAndAlterRoles] != 1 {
		t.Errorf("Result %+v, want one rename and one password change", res)
	}
	if _, ok := readRole(t, conn, from); ok {
		t.Errorf("role %q still exists", from)
	}
	r, ok := readRole(t, conn, to)
	if !ok || deref(r.password) != "md5"+md5Hash("new-pass", to) {
		t.Errorf("role %q: %v %+v", to, ok, r)
	}
	if got := dbOwner(t, conn, "rn db"); got != to {
		t.Errorf("rn db owner %q, want %q (the renamed role)", got, to)
	}

	// Both names existing is an error, and nothing of the spec runs.
	execAll(t, conn, `CREATE ROLE `+qi(from))
	s.Cluster.Roles = append(s.Cluster.Roles, spec.Role{Name: "rn extra"})
	res, err := Apply(ctx, conn, s, Options{})
	if err == nil || !strings.Contains(err.Error(), "both roles exist") || res.Total != 0 {
		t.Fatalf("Apply with both roles: %+v, %v; want a clear error and nothing run", res, err)
	}
	if _, ok := readRole(t, conn, "rn extra"); ok {
		t.Error("a role was created although the plan failed")
	}
}

func TestApplyDeleteRoleOwningObjects(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	const (
		owner   = "del owner"
		victim  = `Del "Role"`
		granter = "del granter"
	)
	dbs := []string{"del db 1", "Del DB 2", "del-db-3"}
	execAll(t, conn,
		`CREATE ROLE `+qi(owner), `CREATE ROLE `+qi(victim), `CREATE ROLE `+qi(granter),
		// In the system database too.
		`CREATE TABLE public.del_sys_table (id int)`, `ALTER TABLE public.del_sys_table OWNER TO `+qi(victim))
	for i, db := range dbs {
		execAll(t, conn, `CREATE DATABASE `+qi(db)+` OWNER `+qi(owner))
		dbc := connect(t, inst.ConnstrDB(db))
		execAll(t, dbc,
			`CREATE TABLE public.owned (id int)`, `ALTER TABLE public.owned OWNER TO `+qi(victim),
			`CREATE SCHEMA "Victim's schema" AUTHORIZATION `+qi(victim),
			`CREATE TABLE "Victim's schema".t (id int)`, `ALTER TABLE "Victim's schema".t OWNER TO `+qi(victim),
			// A privilege granted by a role that is not the owner: DROP OWNED BY alone
			// does not revoke it.
			`CREATE TABLE public.shared (id int)`, `ALTER TABLE public.shared OWNER TO `+qi(owner),
			`GRANT SELECT ON public.shared TO `+qi(granter)+` WITH GRANT OPTION`,
			`SET ROLE `+qi(granter), `GRANT SELECT ON public.shared TO `+qi(victim), `RESET ROLE`,
			fmt.Sprintf(`CREATE TABLE public.plain%d (id int)`, i))
	}
	s := specOf([]spec.Role{{Name: owner}, {Name: granter}}, nil)
	for _, db := range dbs {
		s.Cluster.Databases = append(s.Cluster.Databases, spec.Database{Name: db, Owner: owner})
	}
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, victim)}
	res := mustApply(t, conn, s, Options{Concurrency: 2})
	if res.PerPhase[PhaseDropRoles] != 1 || res.PerPhase[PhaseDeleteDBRoleReferences] < 2*len(dbs)+2 {
		t.Errorf("Result %+v", res)
	}
	if _, ok := readRole(t, conn, victim); ok {
		t.Fatalf("role %q still exists", victim)
	}
	if got := tableOwner(t, conn, "public.del_sys_table"); got != pgtest.AdminUser {
		t.Errorf("system database table owned by %q, want %q", got, pgtest.AdminUser)
	}
	for _, db := range dbs {
		dbc := connect(t, inst.ConnstrDB(db))
		for _, tbl := range []string{"public.owned", "Victim's schema.t", "public.shared"} {
			if got := tableOwner(t, dbc, tbl); got != owner {
				t.Errorf("%s: %s owned by %q, want the database owner %q", db, tbl, got, owner)
			}
		}
		var acl string
		if err := dbc.QueryRow(ctx, `SELECT relacl::text FROM pg_class WHERE relname = 'shared'`).Scan(&acl); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(acl, granter) {
			t.Errorf("%s: the granter's own privilege was lost: %s", db, acl)
		}
	}
}

func TestApplyDeletedRoleOwningDatabaseRunsNothing(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	execAll(t, conn, `CREATE ROLE dro_role`, `CREATE DATABASE dro_db OWNER dro_role`)
	s := specOf([]spec.Role{{Name: "dro_new"}}, nil)
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, "dro_role")}
	res, err := Apply(ctx, conn, s, Options{})
	if err == nil || !strings.Contains(err.Error(), `"dro_db"`) || res.Total != 0 {
		t.Fatalf("Apply: %+v, %v; want an error naming the database and nothing run", res, err)
	}
	if _, ok := readRole(t, conn, "dro_new"); ok {
		t.Error("a role was created although the plan failed")
	}
}

func TestApplyDatabaseDeltas(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	execAll(t, conn,
		`CREATE DATABASE "dd invalid"`,
		`UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'dd invalid'`,
		`CREATE DATABASE "dd template" IS_TEMPLATE true`,
		`CREATE DATABASE "dd busy"`,
		`CREATE DATABASE "dd from"`)
	// A session in the database to drop: WITH (FORCE) ends it.
	busy := connect(t, inst.ConnstrDB("dd busy"))
	s := specOf([]spec.Role{{Name: "dd_owner"}}, []spec.Database{{Name: "dd to", Owner: "dd_owner"}})
	s.DeltaOperations = []spec.DeltaOp{
		delta(spec.DeltaDeleteDB, "dd template"), delta(spec.DeltaDeleteDB, "dd busy"),
		delta(spec.DeltaDeleteDB, "dd never existed"), delta(spec.DeltaRenameDB, "dd from", "dd to"),
	}
	res := mustApply(t, conn, s, Options{})
	want := map[string]int{PhaseDropInvalidDatabases: 1, PhaseRenameAndDeleteDatabases: 4, PhaseCreateAndAlterDatabases: 1}
	for ph, n := range want {
		if res.PerPhase[ph] != n {
			t.Errorf("phase %s ran %d actions, want %d (%+v)", ph, res.PerPhase[ph], n, res)
		}
	}
	for _, db := range []string{"dd invalid", "dd template", "dd busy", "dd from"} {
		if dbExists(t, conn, db) {
			t.Errorf("database %q still exists", db)
		}
	}
	if got := dbOwner(t, conn, "dd to"); got != "dd_owner" {
		t.Errorf("renamed database owned by %q, want dd_owner", got)
	}
	if err := busy.Ping(ctx); err == nil {
		t.Error("the session in the dropped database survived")
	}
}

func TestApplyQuotedNamesEverywhere(t *testing.T) {
	inst := shared(t)
	conn := connect(t, inst.Connstr())
	names := []string{
		`qn "quoted"`, "qn with space", "QN MixedCase", "qn ünïcødé 名前", "qn it's",
		"qn" + strings.Repeat("é", 30) + "x", // 63 bytes
		"table", "qn;drop",
	}
	victim := "qn \"victim\" ü"
	execAll(t, conn, `CREATE ROLE `+qi(victim), `CREATE ROLE `+qi("qn renamed from"))
	s := specOf(nil, nil)
	for _, n := range names {
		if len(n) > maxNameLen {
			t.Fatalf("%q is %d bytes", n, len(n))
		}
		s.Cluster.Roles = append(s.Cluster.Roles, spec.Role{Name: n, EncryptedPassword: ptr(md5Hash("pw", n))})
		s.Cluster.Databases = append(s.Cluster.Databases, spec.Database{Name: n, Owner: n})
	}
	s.Cluster.Roles = append(s.Cluster.Roles, spec.Role{Name: "qn renamed 'to'"})
	s.DeltaOperations = []spec.DeltaOp{
		delta(spec.DeltaRenameRole, "qn renamed from", "qn renamed 'to'"),
		delta(spec.DeltaDeleteRole, victim),
	}
	// The deleted role owns a table in the first database once it exists: apply once
	// without the delete, add the table, then apply with it.
	withoutDelete := *s
	withoutDelete.DeltaOperations = s.DeltaOperations[:1]
	mustApply(t, conn, &withoutDelete, Options{Concurrency: 3})
	first := connect(t, inst.ConnstrDB(names[0]))
	execAll(t, first, `CREATE TABLE "Victim Table" (id int)`, `ALTER TABLE "Victim Table" OWNER TO `+qi(victim))
	first.Close(context.Background())
	mustApply(t, conn, s, Options{Concurrency: 3})
	for _, n := range names {
		if got := dbOwner(t, conn, n); got != n {
			t.Errorf("database %q owned by %q", n, got)
		}
	}
	if _, ok := readRole(t, conn, victim); ok {
		t.Errorf("role %q not dropped", victim)
	}
	if _, ok := readRole(t, conn, "qn renamed 'to'"); !ok {
		t.Error("role not renamed")
	}
	first = connect(t, inst.ConnstrDB(names[0]))
	if got := tableOwner(t, first, `public.Victim Table`); got != names[0] {
		t.Errorf("table owned by %q, want %q", got, names[0])
	}
}

func TestApplyManyDatabasesConcurrently(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	execAll(t, conn, `CREATE ROLE many_owner`, `CREATE ROLE many_victim`)
	s := specOf([]spec.Role{{Name: "many_owner"}}, nil)
	for i := 0; i < 20; i++ {
		s.Cluster.Databases = append(s.Cluster.Databases, spec.Database{Name: fmt.Sprintf("many %02d", i), Owner: "many_owner"})
	}
	mustApply(t, conn, s, Options{Concurrency: 4})
	for _, d := range s.Cluster.Databases {
		dbc := connect(t, inst.ConnstrDB(d.Name))
		execAll(t, dbc, `CREATE TABLE victim_t (id int)`, `ALTER TABLE victim_t OWNER TO many_victim`)
		dbc.Close(ctx)
	}
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, "many_victim")}
	res := mustApply(t, conn, s, Options{Concurrency: 4})
	if res.Databases < 21 || res.PerPhase[PhaseDeleteDBRoleReferences] != 40 || res.PerPhase[PhaseDropRoles] != 1 {
		t.Errorf("Result %+v", res)
	}
	for _, d := range s.Cluster.Databases {
		dbc := connect(t, inst.ConnstrDB(d.Name))
		if got := tableOwner(t, dbc, "public.victim_t"); got != "many_owner" {
			t.Errorf("%s: table owned by %q", d.Name, got)
		}
		var n int
		if err := dbc.QueryRow(ctx, `SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a
			WHERE a.grantee = 'neon_superuser'::regrole AND a.is_grantable`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(allTablePrivileges)+len(allSequencePrivileges) {
			t.Errorf("%s: %d default privileges for neon_superuser", d.Name, n)
		}
		dbc.Close(ctx)
	}
}

func TestApplyDropSubscriptions(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	execAll(t, conn, `CREATE DATABASE "sub db"`, `CREATE DATABASE "sub gone"`)
	createSub := func(db, name string) {
		c := connect(t, inst.ConnstrDB(db))
		execAll(t, c, `CREATE SUBSCRIPTION `+qi(name)+` CONNECTION 'host=/nonexistent dbname=x' PUBLICATION p WITH (connect = false)`)
		c.Close(ctx)
	}
	subs := func() []string {
		var out []string
		rows, err := conn.Query(ctx, `SELECT d.datname || '/' || s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	createSub("sub db", "My Sub")
	createSub("sub gone", "doomed")

	// Deleting a database drops its subscriptions first, whatever the flag.
	s := specOf(nil, []spec.Database{{Name: "sub db", Owner: pgtest.AdminUser}})
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteDB, "sub gone")}
	mustApply(t, conn, s, Options{})
	if dbExists(t, conn, "sub gone") {
		t.Error(`"sub gone" not dropped`)
	}
	if got := subs(); len(got) != 1 || got[0] != "sub db/My Sub" {
		t.Fatalf("subscriptions %v, want only the one of sub db (flag not set)", got)
	}

	s.DropSubscriptionsBeforeStart = true
	res := mustApply(t, conn, s, Options{TimelineID: "tl-one"})
	if res.PerPhase[PhaseDropLogicalSubscriptions] != 3 || res.PerPhase[PhaseFinalizeDropLogicalSubscriptions] != 1 {
		t.Errorf("Result %+v", res)
	}
	if got := subs(); len(got) != 0 {
		t.Fatalf("subscriptions left: %v", got)
	}
	var tl string
	if err := conn.QueryRow(ctx, `SELECT timeline_id FROM neon.drop_subscriptions_done`).Scan(&tl); err != nil || tl != "tl-one" {
		t.Fatalf("drop_subscriptions_done: %q, %v", tl, err)
	}

	// Done for this timeline: a new subscription is kept; a new timeline drops it.
	createSub("sub db", "later")
	if res, err := Apply(ctx, conn, s, Options{TimelineID: "tl-one"}); err != nil || res.Total != 0 {
		t.Fatalf("Apply on the same timeline: %+v, %v", res, err)
	}
	if got := subs(); len(got) != 1 {
		t.Fatalf("subscriptions %v, want the new one kept", got)
	}
	mustApply(t, conn, s, Options{TimelineID: "tl-two"})
	if got := subs(); len(got) != 0 {
		t.Fatalf("subscriptions left on a new timeline: %v", got)
	}

	// A branch inherits the parent's record of applied databases: even where its
	// fingerprints match, a new timeline drops the subscriptions (SkipUnchanged must not
	// skip that).
	// (Apply once: a second Apply on the same timeline would record "nothing to drop".)
	if _, err := Apply(ctx, conn, s, Options{TimelineID: "tl-parent", SkipUnchanged: true}); err != nil {
		t.Fatal(err)
	}
	createSub("sub db", "on the parent")
	res, err := Apply(ctx, conn, s, Options{TimelineID: "tl-branch", SkipUnchanged: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := subs(); len(got) != 0 {
		t.Fatalf("subscriptions left on a branch: %v (result %+v)", got, res)
	}
}

func TestApplyNeonModeNeedsTheExtension(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf([]spec.Role{{Name: "nm_role"}}, nil)
	res, err := Apply(ctx, conn, s, Options{Neon: true})
	if err == nil || !strings.Contains(err.Error(), "extension neon") || res.Total != 0 {
		t.Fatalf("Apply in neon mode on vanilla PostgreSQL: %+v, %v", res, err)
	}
	if _, ok := readRole(t, conn, "nm_role"); ok {
		t.Error("a role was created although the plan failed")
	}
	mustApply(t, conn, s, Options{}) // standalone: skipped with a log line
}

func TestApplyPgStatStatements(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	res := mustApply(t, conn, specOf(nil, nil), Options{})
	if res.PerPhase[PhaseHandleOtherExtensions] != 1 {
		t.Errorf("Result %+v", res)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_statements`).Scan(&n); err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	var id int
	if err := conn.QueryRow(ctx, `SELECT id FROM public.health_check`).Scan(&id); err != nil || id != 1 {
		t.Errorf("health_check: %d, %v", id, err)
	}
}

func TestApplyDatabaseFailureNamesTheDatabase(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf([]spec.Role{{Name: "dbf_owner"}}, []spec.Database{{Name: "dbf db", Owner: "dbf_owner"}})
	// Per-database connections through a socket directory that does not exist; with one
	// database at a time, the first failure (the spec database) stops the rest.
	bad := "postgresql://cloud_admin@/postgres?host=/nonexistent-dir&port=5432"
	res, err := Apply(ctx, conn, s, Options{Connstr: bad, Concurrency: 1})
	var dbErr *DatabaseError
	if !errors.As(err, &dbErr) || dbErr.Database != "dbf db" || !strings.Contains(err.Error(), `database "dbf db"`) {
		t.Fatalf("Apply: %v, want a DatabaseError naming \"dbf db\"", err)
	}
	if res.PerPhase[PhaseCreateAndAlterDatabases] != 2 || res.Databases != 0 {
		t.Errorf("Result %+v: the main phases should have run, no database completed", res)
	}
	// With a working Connstr the same spec completes.
	mustApply(t, conn, s, Options{Connstr: inst.Connstr()})
}

func TestApplyOwnerMissingWithDeltasRunsNothing(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	execAll(t, conn, `CREATE DATABASE omd_doomed`, `CREATE ROLE omd_old`)
	s := specOf([]spec.Role{{Name: "omd_role"}}, []spec.Database{{Name: "omd_db", Owner: "omd_nobody"}})
	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteDB, "omd_doomed"), delta(spec.DeltaRenameRole, "omd_old", "omd_new")}
	res, err := Apply(ctx, conn, s, Options{})
	if err == nil || !strings.Contains(err.Error(), `owner "omd_nobody"`) || res.Total != 0 {
		t.Fatalf("Apply: %+v, %v", res, err)
	}
	if !dbExists(t, conn, "omd_doomed") {
		t.Error("a database was dropped although the plan failed")
	}
	if _, ok := readRole(t, conn, "omd_old"); !ok {
		t.Error("a role was renamed although the plan failed")
	}
}
