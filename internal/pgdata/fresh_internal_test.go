package pgdata

import (
	"os"
	"path/filepath"
	"testing"
)

// removeContents is PrepareFresh's way when PGDATA cannot be renamed (a mount
// point): everything inside goes, the directory stays.
func TestRemoveContents(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"base/1/f", "global/g", "PG_VERSION"} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "keep")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := removeContents(dir); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left: %v, %v", ents, err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("a symlink's target was touched: %v", err)
	}
	if err := removeContents(filepath.Join(dir, "missing")); err == nil {
		t.Error("removeContents of a missing directory succeeded")
	}
}
