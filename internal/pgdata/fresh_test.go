package pgdata_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/spec"
)

// basePGData makes a directory shaped like an unpacked pageserver basebackup.
func basePGData(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pg_dynshmem"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func read(t *testing.T, p string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

var testAuth = pgdata.Auth{AdminRole: "cloud_admin", OSUsers: []string{"postgres", "root"}}

func TestFinishNeon(t *testing.T) {
	// What initdb leaves in a basebackup: every local connection trusted.
	trust := "local all all trust\nhost all all 127.0.0.1/32 trust\n"
	wantHBA, err := pgconf.HBA(testAuth.AdminRole)
	if err != nil {
		t.Fatal(err)
	}
	wantIdent, err := pgconf.Ident(testAuth.AdminRole, testAuth.OSUsers)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		mode        spec.ModeType
		files       map[string]string
		wantNeon    string // "" = absent
		wantStandby bool
	}{
		{"primary, zenith.signal only", spec.ModeTypePrimary,
			map[string]string{"zenith.signal": "PREV LSN: 0/1", "pg_hba.conf": trust},
			"PREV LSN: 0/1", false},
		{"neon.signal wins over zenith.signal", spec.ModeTypePrimary,
			map[string]string{"zenith.signal": "old", "neon.signal": "new", "pg_hba.conf": trust, "pg_ident.conf": "x root cloud_admin\n"},
			"new", false},
		{"replica, Neon's line already there", spec.ModeTypeReplica,
			map[string]string{"pg_hba.conf": trust + pgconf.NeonHBALine},
			"", true},
		{"static, no pg_hba.conf", spec.ModeTypeStatic, map[string]string{},
			"", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := basePGData(t, tc.files)
			// Twice: the second call must change nothing.
			for range 2 {
				if err := (pgdata.Dir{Path: dir, NoSync: true}).FinishNeon(tc.mode, testAuth); err != nil {
					t.Fatal(err)
				}
			}
			neon, ok := read(t, filepath.Join(dir, "neon.signal"))
			if ok != (tc.wantNeon != "") || neon != tc.wantNeon {
				t.Errorf("neon.signal %q (present %v), want %q", neon, ok, tc.wantNeon)
			}
			if got, _ := read(t, filepath.Join(dir, "pg_hba.conf")); got != wantHBA || strings.Contains(got, "trust") {
				t.Errorf("pg_hba.conf %q, want %q", got, wantHBA)
			}
			if got, _ := read(t, filepath.Join(dir, "pg_ident.conf")); got != wantIdent {
				t.Errorf("pg_ident.conf %q, want %q", got, wantIdent)
			}
			if target, err := os.Readlink(filepath.Join(dir, "pg_dynshmem")); err != nil || target != "/dev/shm/" {
				t.Errorf("pg_dynshmem -> %q, %v", target, err)
			}
			standby, ok := read(t, filepath.Join(dir, "standby.signal"))
			if ok != tc.wantStandby || standby != "" {
				t.Errorf("standby.signal present %v (%q), want %v", ok, standby, tc.wantStandby)
			}
		})
	}
	// A bad admin role or no OS user fails, and leaves the basebackup's file alone
	// (Postgres is never started: compute-init fails).
	dir := basePGData(t, map[string]string{"pg_hba.conf": trust})
	if err := (pgdata.Dir{Path: dir, NoSync: true}).FinishNeon(spec.ModeTypePrimary, pgdata.Auth{AdminRole: "cloud_admin"}); err == nil {
		t.Error("FinishNeon without OS users succeeded")
	}
}

func TestFinishNeonDynShmemErrors(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		if err := (pgdata.Dir{Path: dir, NoSync: true}).FinishNeon(spec.ModeTypePrimary, testAuth); err == nil || !strings.Contains(err.Error(), "pg_dynshmem") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("not empty", func(t *testing.T) {
		dir := basePGData(t, nil)
		if err := os.WriteFile(filepath.Join(dir, "pg_dynshmem", "seg"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := (pgdata.Dir{Path: dir, NoSync: true}).FinishNeon(spec.ModeTypePrimary, testAuth); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("bad mode", func(t *testing.T) {
		if err := (pgdata.Dir{Path: basePGData(t, nil), NoSync: true}).FinishNeon("Replica", testAuth); err == nil {
			t.Fatal("accepted mode Replica")
		}
	})
}

func TestPrepareFresh(t *testing.T) {
	for _, bad := range []string{"", "/", "//", "relative/pgdata"} {
		if err := (pgdata.Dir{Path: bad}).PrepareFresh(); err == nil {
			t.Errorf("PrepareFresh(%q) succeeded", bad)
		}
	}
	dir := filepath.Join(t.TempDir(), "pgdata")
	if err := os.MkdirAll(filepath.Join(dir, "base", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base", "1", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (pgdata.Dir{Path: dir}).PrepareFresh(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode() != fs.ModeDir|0o700 {
		t.Fatalf("pgdata: %v, %v", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("pgdata not empty: %v", ents)
	}

	// The old PGDATA was set aside, not lost on the way: RemoveOld deletes it,
	// and nothing else beside PGDATA.
	parent := filepath.Dir(dir)
	for _, keep := range []string{"pgdata2", ".pgdata.oldish", "other"} {
		if err := os.Mkdir(filepath.Join(parent, keep), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	olds, _ := filepath.Glob(filepath.Join(parent, ".pgdata.old.*"))
	if len(olds) != 1 {
		t.Fatalf("old PGDATAs set aside: %v, want 1", olds)
	}
	if b, err := os.ReadFile(filepath.Join(olds[0], "base", "1", "f")); err != nil || string(b) != "x" {
		t.Errorf("the old PGDATA's files are not in the set-aside copy: %q %v", b, err)
	}
	// Starts that never reach running (nothing removes their copy) keep one copy, not
	// one each.
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := (pgdata.Dir{Path: dir}).PrepareFresh(); err != nil {
			t.Fatal(err)
		}
	}
	if olds, _ := filepath.Glob(filepath.Join(parent, ".pgdata.old.*")); len(olds) != 1 {
		t.Fatalf("after failed starts, old PGDATAs set aside: %v, want 1", olds)
	}
	n, err := (pgdata.Dir{Path: dir}).RemoveOld()
	if err != nil || n != 1 {
		t.Errorf("RemoveOld = %d, %v; want 1", n, err)
	}
	ents, _ := os.ReadDir(parent)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{".pgdata.oldish", "other", "pgdata", "pgdata2"}; !slices.Equal(left, want) {
		t.Errorf("left beside PGDATA: %v, want %v", left, want)
	}
	if n, err := (pgdata.Dir{Path: dir}).RemoveOld(); err != nil || n != 0 {
		t.Errorf("RemoveOld again = %d, %v", n, err)
	}
	if _, err := (pgdata.Dir{Path: "relative"}).RemoveOld(); err == nil {
		t.Error("RemoveOld of a relative path succeeded")
	}
}
