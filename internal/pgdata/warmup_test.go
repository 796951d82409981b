package pgdata_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/pgdata"
)

// The warm-up directory is PGDATA's sibling; removing it leaves PGDATA alone, and a
// path that is not absolute is refused.
func TestWarmupDir(t *testing.T) {
	root := t.TempDir()
	pg := filepath.Join(root, "pgdata")
	w := pgdata.Warmup(pg + "/")
	if w.Path != pg+".warmup" || !w.NoSync {
		t.Fatalf("Warmup(%q) = %+v", pg+"/", w)
	}
	if removed, err := pgdata.RemoveWarmup(pg); removed || err != nil {
		t.Fatalf("nothing to remove: %v, %v", removed, err)
	}
	for _, d := range []string{filepath.Join(pg, "base"), filepath.Join(w.Path, "base")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteWarmupConf(false); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(w.File(pgdata.ConfFile))
	if err != nil || string(conf) != pgconf.Warmup(pgconf.WarmupOptions{SocketDir: w.Path}) {
		t.Fatalf("postgresql.conf %q, %v", conf, err)
	}
	if removed, err := pgdata.RemoveWarmup(pg); !removed || err != nil {
		t.Fatalf("RemoveWarmup = %v, %v", removed, err)
	}
	if _, err := os.Lstat(w.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the warm-up directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pg, "base", "f")); err != nil {
		t.Errorf("PGDATA was touched: %v", err)
	}
	for _, bad := range []string{"", "pgdata", "./pgdata"} {
		if _, err := pgdata.RemoveWarmup(bad); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
			t.Errorf("RemoveWarmup(%q) = %v", bad, err)
		}
	}
}
