package archtest

import (
	"bufio"
	"errors"
	"fmt"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is one package of the module, as its non-test files build on this platform.
type pkg struct {
	// Imports are the non-test imports: module packages by their path inside the module
	// ("internal/state"), others by their import path.
	Imports []string
	// TestImports are the imports of the _test.go files, in the same form.
	TestImports []string
	// Doc is the synopsis of the package comment ("" without one).
	Doc string
}

// graph maps module-relative package paths ("internal/api", "cmd/compute-init") to
// their packages.
type graph map[string]*pkg

// loadModule parses the imports and package comments of every package of the module
// at root (go/build, no go command): directories without non-test Go files, testdata,
// and hidden directories are left out.
func loadModule(root string) (graph, error) {
	modPath, err := modulePath(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	ctx := build.Default
	ctx.CgoEnabled = false
	g := graph{}
	err = filepath.WalkDir(root, func(dir string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			return nil
		}
		if name := e.Name(); dir != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
			return filepath.SkipDir
		}
		bp, err := ctx.ImportDir(dir, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		if len(bp.GoFiles)+len(bp.CgoFiles) == 0 {
			return nil // tests only (test/system)
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return err
		}
		local := func(imports ...[]string) []string {
			var out []string
			for _, list := range imports {
				for _, imp := range list {
					if imp == modPath {
						imp = "."
					} else if r, ok := strings.CutPrefix(imp, modPath+"/"); ok {
						imp = r
					}
					out = append(out, imp)
				}
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
		g[filepath.ToSlash(rel)] = &pkg{
			Imports:     local(bp.Imports),
			TestImports: local(bp.TestImports, bp.XTestImports),
			Doc:         bp.Doc,
		}
		return nil
	})
	return g, err
}

func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	return "", fmt.Errorf("%s: no module line", gomod)
}

// repoGraph loads the repository this test runs in (two levels up).
func repoGraph(t *testing.T) graph {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadModule(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"internal/state", "internal/archtest", "cmd/compute-init", "cmd/compute-api"} {
		if g[must] == nil {
			t.Fatalf("loaded %d packages, %s not among them", len(g), must)
		}
	}
	return g
}

// The loader itself: imports inside the module become module paths, a package without a
// comment has no Doc, test imports are kept apart, test-only directories are left out.
func TestLoadModule(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"go.mod":             "module example.com/m\n\ngo 1.24\n",
		"a/a.go":             "// Package a is documented.\npackage a\n\nimport (\n\t_ \"example.com/m/b\"\n\t_ \"fmt\"\n)\n",
		"a/a_test.go":        "package a\n\nimport _ \"example.com/other/x\"\n",
		"b/b.go":             "package b // not a doc comment\n",
		"b/doc_test.go":      "// Package b has its doc only in a test file.\npackage b\n",
		"c/c_test.go":        "package c\n",
		"a/testdata/t/t.go":  "package t\n",
		"cmd/tool/main.go":   "// Command tool is a tool.\npackage main\n\nimport _ \"example.com/m\"\n",
		"root.go":            "// Package m is the root.\npackage m\n",
		".hidden/h/h.go":     "package h\n",
		"d/skip_other_os.go": "//go:build windows\n\n// Package d is only for windows.\npackage d\n\nimport _ \"example.com/m/a\"\n",
		"d/d.go":             "// Package d.\npackage d\n",
	}
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := loadModule(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range g {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{".", "a", "b", "cmd/tool", "d"}; !slices.Equal(names, want) {
		t.Fatalf("packages %q, want %q", names, want)
	}
	if a := g["a"]; !slices.Equal(a.Imports, []string{"b", "fmt"}) || !slices.Equal(a.TestImports, []string{"example.com/other/x"}) || a.Doc != "Package a is documented." {
		t.Errorf("a = %+v", a)
	}
	if b := g["b"]; b.Doc != "" {
		t.Errorf("b has doc %q from a test file or a line comment", b.Doc)
	}
	if d := g["d"]; len(d.Imports) != 0 {
		t.Errorf("d imports %q from a file for another OS", d.Imports)
	}
	if tool := g["cmd/tool"]; !slices.Equal(tool.Imports, []string{"."}) {
		t.Errorf("cmd/tool imports %q", tool.Imports)
	}
}
