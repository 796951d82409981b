package apply

import (
	"context"
	"testing"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
)

// TestDoneDBsSkipsUnchangedDatabases: with the fingerprints of a complete apply, a
// re-apply does no per-database work; a change that concerns the databases (a role to
// delete) brings it back everywhere, and a new database gets its work.
func TestDoneDBsSkipsUnchangedDatabases(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf(
		[]spec.Role{{Name: "a"}, {Name: "b"}},
		[]spec.Database{{Name: "d1", Owner: "a"}, {Name: "d2", Owner: "b"}})
	first, err := Apply(ctx, conn, s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Databases != 3 || len(first.DBFingerprints) != 3 { // d1, d2 and the system database
		t.Fatalf("first apply: %+v", first)
	}
	again, err := Apply(ctx, conn, s, Options{DoneDBs: first.DBFingerprints})
	if err != nil {
		t.Fatal(err)
	}
	if again.Databases != 0 || again.DBsUnchanged != 3 || again.Total != 0 {
		t.Fatalf("no-op re-apply did per-database work: %+v", again)
	}

	// A new database: only it gets per-database work.
	s.Cluster.Databases = append(s.Cluster.Databases, spec.Database{Name: "d3", Owner: "a"})
	third, err := Apply(ctx, conn, s, Options{DoneDBs: again.DBFingerprints})
	if err != nil {
		t.Fatal(err)
	}
	if third.Databases != 1 || third.DBsUnchanged != 3 {
		t.Fatalf("new database: %+v", third)
	}

	// Deleting a role concerns every database again.
	s.Cluster.Roles = s.Cluster.Roles[:1]
	s.Cluster.Databases = []spec.Database{{Name: "d1", Owner: "a"}, {Name: "d3", Owner: "a"}}
	name := "b"
	s.DeltaOperations = []spec.DeltaOp{{Action: spec.DeltaDeleteDB, Name: "d2"}, {Action: spec.DeltaDeleteRole, Name: name}}
	fourth, err := Apply(ctx, conn, s, Options{DoneDBs: third.DBFingerprints})
	if err != nil {
		t.Fatal(err)
	}
	if fourth.DBsUnchanged != 0 || fourth.Databases < 3 {
		t.Fatalf("delete_role: %+v", fourth)
	}
	if _, ok := readRole(t, conn, name); ok {
		t.Fatal("role b still exists")
	}
}
