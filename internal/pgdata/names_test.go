package pgdata_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgdata"
)

// TestNamesDeclaredOnce keeps this package the one place that names the files in
// PGDATA: no other non-test Go file of the repository spells one of them as a string
// literal. The fakes and helpers for tests (which build or inspect data directories of
// their own) are exempt.
func TestNamesDeclaredOnce(t *testing.T) {
	names := map[string]bool{}
	for _, n := range []string{pgdata.ConfFile, pgdata.HBAFile, pgdata.IdentFile, pgdata.TempOverrideFile,
		pgdata.ServerCertFile, pgdata.ServerKeyFile, pgdata.NeonSignalFile, pgdata.ZenithSignalFile,
		pgdata.StandbySignalFile, pgdata.DynShmemDir, pgdata.VersionFile} {
		names[n] = true
	}
	root := filepath.Join("..", "..")
	exempt := map[string]bool{
		filepath.Join(root, "internal", "pgdata"):         true,
		filepath.Join(root, "internal", "pageservertest"): true,
		filepath.Join(root, "internal", "pgtest"):         true,
	}
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if exempt[p] || (p != root && strings.HasPrefix(d.Name(), ".")) || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && names[strings.TrimSuffix(s, "/")] {
				t.Errorf("%s: %s names a file in PGDATA; use the constant of package pgdata", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d Go files checked: is the repository root %s?", checked, root)
	}
}
