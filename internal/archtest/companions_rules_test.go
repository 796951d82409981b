package archtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The companions' packages (internal/pgbouncer, internal/localproxy) talk to processes
// beside Postgres. They are leaves: of the module they import internal/spec only (the
// settings' types), and only the configure step (internal/compute) and compute-api's
// wiring (internal/apiserver) import them, outside tests and their own test helpers.
var (
	companionPkgs      = []string{"internal/pgbouncer", "internal/localproxy"}
	companionImporters = []string{"internal/compute", "internal/apiserver"}
)

func companionRules(g graph) []string {
	var bad []string
	for p, pk := range g {
		for _, imp := range pk.Imports {
			if slices.Contains(companionPkgs, imp) && !slices.Contains(companionImporters, p) && !under(p, companionPkgs...) {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
			if slices.Contains(companionPkgs, p) && g[imp] != nil && imp != "internal/spec" {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func TestCompanionRules(t *testing.T) {
	fake := graph{
		"internal/pgbouncer":               {Imports: []string{"internal/spec", "internal/state", "github.com/jackc/pgx/v5"}, Doc: "Package pgbouncer."},
		"internal/pgbouncer/pgbouncertest": {Imports: []string{"internal/pgbouncer", "internal/pgtest"}, Doc: "Package pgbouncertest."},
		"internal/localproxy":              {Imports: []string{"internal/spec"}, Doc: "Package localproxy."},
		"internal/compute":                 {Imports: []string{"internal/localproxy", "internal/pgbouncer"}, Doc: "Package compute."},
		"internal/control":                 {Imports: []string{"internal/localproxy"}, Doc: "Package control."},
		"internal/spec":                    {Doc: "Package spec."},
		"internal/state":                   {Doc: "Package state."},
		"internal/pgtest":                  {Doc: "Package pgtest."},
	}
	want := []string{
		"internal/control imports internal/localproxy",
		"internal/pgbouncer imports internal/state",
	}
	if got := companionRules(fake); !slices.Equal(got, want) {
		t.Errorf("violations in the fake graph\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	g := repoGraph(t)
	for _, p := range companionPkgs {
		if g[p] == nil {
			t.Fatalf("%s not found", p)
		}
	}
	for _, v := range companionRules(g) {
		t.Error(v)
	}
}
