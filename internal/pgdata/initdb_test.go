package pgdata_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgtest"
)

func TestInitdbRefuses(t *testing.T) {
	ctx := context.Background()
	// initdb must not run: a binary that does not exist would fail differently.
	o := pgdata.InitdbOptions{Initdb: "/nonexistent/initdb", Superuser: "cloud_admin"}

	d := pgdata.Dir{Path: t.TempDir()}
	if err := os.WriteFile(d.File("stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if d.Initialized() {
		t.Error("a directory without PG_VERSION counts as initialized")
	}
	if err := d.Initdb(ctx, o); err == nil || !strings.Contains(err.Error(), "refusing to touch it") {
		t.Errorf("initdb into a directory with files: %v", err)
	}

	d = pgdata.Dir{Path: t.TempDir()}
	if err := os.WriteFile(d.File(pgdata.VersionFile), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !d.Initialized() {
		t.Error("a directory with PG_VERSION does not count as initialized")
	}
	if err := d.Initdb(ctx, o); err == nil || !strings.Contains(err.Error(), "cluster already") {
		t.Errorf("initdb over a cluster: %v", err)
	}
}

// Initdb with PostgreSQL 15's initdb, as the postgres OS user: a cluster with the admin
// role as bootstrap superuser.
func TestInitdb(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	bin := os.Getenv("PGBIN_DIR")
	if bin == "" {
		bin = pgtest.DefaultBinDir
	}
	d := pgdata.Dir{Path: filepath.Join(pgtest.OwnedDir(t, "pgdata-test-"), "pgdata")}
	if err := d.Initdb(context.Background(), pgdata.InitdbOptions{
		Initdb: filepath.Join(bin, "initdb"), Superuser: "cloud_admin", OSUser: pgtest.OSUser,
	}); err != nil {
		t.Fatal(err)
	}
	if !d.Initialized() {
		t.Fatal("no PG_VERSION after initdb")
	}
	hba, err := os.ReadFile(d.File(pgdata.HBAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hba), "peer") || !strings.Contains(string(hba), "scram-sha-256") {
		t.Errorf("initdb's pg_hba.conf:\n%s", hba)
	}
}
