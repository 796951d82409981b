package apply

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
)

func appliedDBs(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	cat, err := ReadCatalog(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	return cat.AppliedDBs
}

// TestSkipUnchangedDatabases: a complete apply records its per-database work in the
// cluster; a re-apply with SkipUnchanged does none; a new database gets its work; a
// database dropped and created again by hand is a new one; a role to delete concerns
// every database again; without SkipUnchanged everything is done.
func TestSkipUnchangedDatabases(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf(
		[]spec.Role{{Name: "a"}, {Name: "b"}},
		[]spec.Database{{Name: "d1", Owner: "a"}, {Name: "d2", Owner: "b"}})
	skip := Options{SkipUnchanged: true}
	first, err := Apply(ctx, conn, s, skip)
	if err != nil {
		t.Fatal(err)
	}
	// d1 and d2; the system database has nothing that could be done (no role to delete,
	// no subscriptions to drop), so it is not even connected to.
	if first.Databases != 2 || first.DBsIdle != 1 || len(first.DBFingerprints) != 2 {
		t.Fatalf("first apply: %+v", first)
	}
	if got := appliedDBs(t, conn); len(got) != 2 || got["d1"] != first.DBFingerprints["d1"] {
		t.Fatalf("recorded %v, want %v", got, first.DBFingerprints)
	}
	again, err := Apply(ctx, conn, s, skip)
	if err != nil {
		t.Fatal(err)
	}
	if again.Databases != 0 || again.DBsUnchanged != 2 || again.Total != 0 {
		t.Fatalf("no-op re-apply did per-database work: %+v", again)
	}
	full, err := Apply(ctx, conn, s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if full.Databases != 2 || full.DBsUnchanged != 0 {
		t.Fatalf("apply without SkipUnchanged: %+v", full)
	}

	// A new database: only it gets per-database work.
	s.Cluster.Databases = append(s.Cluster.Databases, spec.Database{Name: "d3", Owner: "a"})
	third, err := Apply(ctx, conn, s, skip)
	if err != nil {
		t.Fatal(err)
	}
	if third.Databases != 1 || third.DBsUnchanged != 2 {
		t.Fatalf("new database: %+v", third)
	}
	if again, err := Apply(ctx, conn, s, skip); err != nil || again.Databases != 0 || again.DBsUnchanged != 3 {
		t.Fatalf("after the new database was recorded: %+v, %v", again, err)
	}

	// d3 dropped and created again by hand, with the same owner: its schema public lost
	// the default privileges, and the new OID brings its per-database work back.
	for _, q := range []string{"DROP DATABASE d3", "CREATE DATABASE d3 OWNER a"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	recreated, err := Apply(ctx, conn, s, skip)
	if err != nil {
		t.Fatal(err)
	}
	if recreated.Databases != 1 || recreated.DBsUnchanged != 2 || recreated.Total == 0 {
		t.Fatalf("recreated database: %+v", recreated)
	}

	// Deleting a role concerns every database again, the system database included.
	s.Cluster.Roles = s.Cluster.Roles[:1]
	s.Cluster.Databases = []spec.Database{{Name: "d1", Owner: "a"}, {Name: "d3", Owner: "a"}}
	name := "b"
	s.DeltaOperations = []spec.DeltaOp{{Action: spec.DeltaDeleteDB, Name: "d2"}, {Action: spec.DeltaDeleteRole, Name: name}}
	fourth, err := Apply(ctx, conn, s, skip)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.DBsUnchanged != 0 || fourth.Databases < 3 || fourth.DBsIdle != 0 {
		t.Fatalf("delete_role: %+v", fourth)
	}
	if _, ok := readRole(t, conn, name); ok {
		t.Fatal("role b still exists")
	}
	// The record follows: d2 is gone from it.
	if got := appliedDBs(t, conn); len(got) != len(fourth.DBFingerprints) || got["d2"] != "" {
		t.Errorf("recorded %v after d2 was dropped, want %v", got, fourth.DBFingerprints)
	}
}

// The record is the admin role's, with no privileges for PUBLIC. (The privileged role
// reads and writes every table through pg_read_all_data and pg_write_all_data, as it does
// Neon's own bookkeeping tables: changing the record only costs or skips per-database
// work that the privileged role could undo anyway.)
func TestAppliedDBsTablePrivileges(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf([]spec.Role{{Name: "a"}}, []spec.Database{{Name: "d1", Owner: "a"}})
	if _, err := Apply(ctx, conn, s, Options{SkipUnchanged: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE ROLE outsider"); err != nil {
		t.Fatal(err)
	}
	var owner string
	var sel, upd bool
	if err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(relowner),
		has_table_privilege('outsider', '`+AppliedDBsTable+`', 'SELECT'),
		has_table_privilege('outsider', '`+AppliedDBsTable+`', 'UPDATE')
		FROM pg_class WHERE oid = '`+AppliedDBsTable+`'::regclass`).Scan(&owner, &sel, &upd); err != nil {
		t.Fatal(err)
	}
	if owner != pgtest.AdminUser || sel || upd {
		t.Errorf("owner %s; a role outside the privileged role may select %v, update %v", owner, sel, upd)
	}
}
