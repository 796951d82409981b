package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
)

const (
	modulePath    = "github.com/computetools/compute-tools"
	statePkgPath  = modulePath + "/internal/state"
	statetestPath = statePkgPath + "/statetest"
)

// listedPackage is the part of `go list -json` the check needs.
type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	Standard   bool
}

// goList lists every package of the module and its dependencies with their export data
// (compiled as `go build` would, from the build cache).
func goList(t *testing.T, root string) map[string]listedPackage {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	env := []string{"GOPROXY=off"}
	for _, k := range []string{"HOME", "GOCACHE", "GOMODCACHE", "GOPATH", "GOROOT", "GOTOOLCHAIN", "GOFLAGS"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{Path: gobin, Dir: root, Env: env,
		Args: []string{"list", "-export", "-deps", "-json=ImportPath,Dir,GoFiles,Export,Standard", "./..."}})
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(res.Stdout))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// exportImporter imports packages from the export data go list found.
func exportImporter(fset *token.FileSet, pkgs map[string]listedPackage) types.Importer {
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		p, ok := pkgs[path]
		if !ok || p.Export == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(p.Export)
	})
}

// statusWrites type-checks one package's files and returns the places that write the
// status of a state.Record (an assignment to its Status field, or taking its address)
// or that import statetest, which may only be used by tests.
func statusWrites(fset *token.FileSet, imp types.Importer, path string, files []*ast.File) ([]string, error) {
	info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}, Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{Importer: imp}
	if _, err := conf.Check(path, fset, files, info); err != nil {
		return nil, err
	}
	var found []string
	report := func(n ast.Node, what string) {
		found = append(found, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), what))
	}
	// fieldOf names the protected field of a state.Record that e selects (Status, or
	// Promotion: both change only through this package's operations), or "".
	fieldOf := func(e ast.Expr) string {
		sel, ok := ast.Unparen(e).(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Status" && sel.Sel.Name != "Promotion") {
			return ""
		}
		s, ok := info.Selections[sel]
		if !ok || s.Kind() != types.FieldVal {
			return ""
		}
		t := s.Recv()
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		n, ok := t.(*types.Named)
		if ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == statePkgPath && n.Obj().Name() == "Record" {
			return sel.Sel.Name
		}
		return ""
	}
	isRecordPointer := func(e ast.Expr) bool {
		tv, ok := info.Types[e]
		if !ok {
			return false
		}
		p, ok := tv.Type.(*types.Pointer)
		if !ok {
			return false
		}
		n, ok := p.Elem().(*types.Named)
		return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == statePkgPath && n.Obj().Name() == "Record"
	}
	for _, f := range files {
		for _, imp := range f.Imports {
			if strings.Trim(imp.Path.Value, `"`) == statetestPath {
				report(imp, "imports statetest outside a test")
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for _, l := range n.Lhs {
					if f := fieldOf(l); f != "" {
						report(l, "assigns state.Record."+f)
					}
					// *r = ... through a *state.Record replaces the whole record,
					// status included (as inside a Store.Update closure).
					if star, ok := ast.Unparen(l).(*ast.StarExpr); ok && isRecordPointer(star.X) {
						report(l, "replaces a whole state.Record through a pointer")
					}
				}
			case *ast.RangeStmt:
				for _, e := range []ast.Expr{n.Key, n.Value} {
					if e != nil && n.Tok == token.ASSIGN && fieldOf(e) != "" {
						report(e, "assigns state.Record."+fieldOf(e))
					}
				}
			case *ast.UnaryExpr:
				if f := fieldOf(n.X); n.Op == token.AND && f != "" {
					report(n, "takes the address of state.Record."+f)
				}
			}
			return true
		})
	}
	return found, nil
}

// TestNoStatusWritesOutsideState: the status changes only through this package's
// lifecycle operations; no package outside internal/state assigns it.
func TestNoStatusWritesOutsideState(t *testing.T) {
	if testing.Short() {
		t.Skip("lists and type-checks the whole module")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := goList(t, root)
	fset := token.NewFileSet()
	imp := exportImporter(fset, pkgs)
	checked := 0
	for path, p := range pkgs {
		if p.Standard || !strings.HasPrefix(path, modulePath) ||
			path == statePkgPath || strings.HasPrefix(path, statePkgPath+"/") || len(p.GoFiles) == 0 {
			continue
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		found, err := statusWrites(fset, imp, path, files)
		if err != nil {
			t.Fatalf("type-check %s: %v", path, err)
		}
		for _, f := range found {
			t.Errorf("%s (use a lifecycle operation of internal/state)", f)
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("checked only %d packages", checked)
	}
}

// TestStatusWriteChecker: the checker catches writes of the status and nothing else.
func TestStatusWriteChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("lists and type-checks the whole module")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := goList(t, root)
	fset := token.NewFileSet()
	imp := exportImporter(fset, pkgs)
	const bad = `package bad

import (
	"github.com/computetools/compute-tools/internal/state"
	_ "github.com/computetools/compute-tools/internal/state/statetest"
)

type other struct{ Status int }

func f(r *state.Record, v state.Record, o *other) {
	r.Status = state.Failed
	(v.Status), o.Status = state.Running, 1
	p := &r.Status
	*p = state.Init
	o.Status = 2
	_ = state.Record{Status: state.Empty}
	var s state.Status = r.Status
	_ = s
	*r = v
	for _, r.Status = range []state.Status{state.Failed} {
	}
	var q state.Record
	q = v
	_ = q
	r.Promotion = nil
	_ = &v.Promotion
}
`
	f, err := parser.ParseFile(fset, "bad.go", bad, 0)
	if err != nil {
		t.Fatal(err)
	}
	found, err := statusWrites(fset, imp, "example.com/bad", []*ast.File{f})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bad.go:5:2: imports statetest outside a test",
		"bad.go:11:2: assigns state.Record.Status",
		"bad.go:12:2: assigns state.Record.Status",
		"bad.go:13:7: takes the address of state.Record.Status",
		"bad.go:19:2: replaces a whole state.Record through a pointer",
		"bad.go:20:9: assigns state.Record.Status",
		"bad.go:25:2: assigns state.Record.Promotion",
		"bad.go:26:6: takes the address of state.Record.Promotion",
	}
	if strings.Join(found, "\n") != strings.Join(want, "\n") {
		t.Errorf("found:\n%s\nwant:\n%s", strings.Join(found, "\n"), strings.Join(want, "\n"))
	}
}
