// Package execxtest helps tests that run the test binary itself as another user (through
// execx.Cmd's User, as root): the binary go test builds sits in a directory only its
// owner can search, so the helper process needs a copy where every user can run it. It
// is imported only by tests.
package execxtest

import (
	"os"
	"path/filepath"
	"testing"
)

// SelfForOthers copies the running test binary into a new temporary directory that every
// user can search (the directory and its parent made 0755) and returns the copy's path.
func SelfForOthers(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(dir, filepath.Base(self))
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}
