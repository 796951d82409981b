package archtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// pureImports are what the vm-monitor's arithmetic (internal/vmmonitor/sizing) may
// import: no files, clock, network or other packages of the module, so that its table
// tests cover all it does.
var pureImports = []string{"errors", "fmt", "math", "strconv"}

// impureSizing lists the imports of internal/vmmonitor/sizing (and below) outside
// pureImports.
func impureSizing(g graph) []string {
	var bad []string
	for p, pk := range g {
		if !under(p, "internal/vmmonitor/sizing") {
			continue
		}
		for _, imp := range pk.Imports {
			if !slices.Contains(pureImports, imp) {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func TestSizingIsPure(t *testing.T) {
	fake := graph{
		"internal/vmmonitor/sizing":     {Imports: []string{"fmt", "os", "internal/paths"}, Doc: "Package sizing."},
		"internal/vmmonitor/sizing/sub": {Imports: []string{"time"}, Doc: "Package sub."},
		"internal/vmmonitor/policy":     {Imports: []string{"os", "internal/vmmonitor/sizing"}, Doc: "Package policy."},
	}
	want := []string{
		"internal/vmmonitor/sizing imports internal/paths",
		"internal/vmmonitor/sizing imports os",
		"internal/vmmonitor/sizing/sub imports time",
	}
	if got := impureSizing(fake); !slices.Equal(got, want) {
		t.Errorf("violations in the fake graph\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	g := repoGraph(t)
	if g["internal/vmmonitor/sizing"] == nil {
		t.Fatal("internal/vmmonitor/sizing not found")
	}
	for _, v := range impureSizing(g) {
		t.Error(v)
	}
}
