package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
)

// TestCheckPoweroffDropIn: set to poweroff without the generator's drop-in, compute-api
// logs an error that says to run daemon-reload; with the drop-in, or set to anything
// else, it logs nothing.
func TestCheckPoweroffDropIn(t *testing.T) {
	without, with := t.TempDir(), t.TempDir()
	p := filepath.Join(with, paths.PoweroffDropIn)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("# comment\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		action control.EndAction
		dir    string
		error  bool
	}{
		{"poweroff, no drop-in", control.EndPowerOff, without, true},
		{"poweroff, drop-in", control.EndPowerOff, with, false},
		{"stop, no drop-in", control.EndStop, without, false},
		{"none, no drop-in", control.EndNone, without, false},
	} {
		var logs bytes.Buffer
		checkPoweroffDropIn(c.action, c.dir, slog.New(slog.NewTextHandler(&logs, nil)))
		l := logs.String()
		if got := strings.Contains(l, "level=ERROR") && strings.Contains(l, "systemctl daemon-reload") && strings.Contains(l, paths.PoweroffDropIn); got != c.error {
			t.Errorf("%s: logged %q, want an error: %v", c.name, l, c.error)
		}
		if !c.error && l != "" {
			t.Errorf("%s: logged %q", c.name, l)
		}
	}
}
