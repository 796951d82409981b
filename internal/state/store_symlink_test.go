package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadRefusesASymlinkedRecord: the state directory is writable by postgres and read
// by root (compute-api, the vm-monitor); a state.json that is a symbolic link would make
// root read any file.
func TestLoadRefusesASymlinkedRecord(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere.json")
	if err := os.WriteFile(target, []byte(`{"status":"running"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.Load(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Load through a symbolic link: %+v, %v", r, err)
	}
}
