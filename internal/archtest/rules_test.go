package archtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// under reports whether p is dir or a package below it, by whole path elements
// ("internal/storage" is not under "internal/stor", and "internal/storagetest" is not
// under "internal/storage").
func under(p string, dirs ...string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// reach returns every module package that from imports, directly or not, each with the
// chain of imports that leads to it ("a -> b -> c"). Imports outside the module are
// left out.
func reach(g graph, from string) map[string]string {
	chains := map[string]string{from: from}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range g[p].Imports {
			if _, seen := chains[imp]; seen || g[imp] == nil {
				continue
			}
			chains[imp] = chains[p] + " -> " + imp
			queue = append(queue, imp)
		}
	}
	return chains
}

// The packages that serve or watch (the HTTP API, the coming monitors) and the code that
// changes a cluster or talks to Neon's storage: the first never depend on the second,
// directly or through another package. Both sides are named by directory, so new
// packages below them are covered without an edit; both names of the pageserver client
// (internal/storage, internal/pageserver) count.
var (
	servingDirs = []string{"internal/api", "internal/control", "internal/monitor", "internal/monitord", "internal/vmmonitor", "internal/vmmonitord"}
	mutatorDirs = []string{"internal/apply", "internal/storage", "internal/pageserver"}
)

func servingImportsMutator(g graph) []string {
	var bad []string
	for p := range g {
		if !under(p, servingDirs...) {
			continue
		}
		for q, chain := range reach(g, p) {
			if under(q, mutatorDirs...) {
				bad = append(bad, chain)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// importersOf lists "pkg imports path" for each package whose own or test files import a
// package under one of the prefixes (import paths outside the module), except the
// packages under allowed.
func importersOf(g graph, prefixes []string, allowed ...string) []string {
	var bad []string
	for p, pk := range g {
		if under(p, allowed...) {
			continue
		}
		for _, imp := range slices.Concat(pk.Imports, pk.TestImports) {
			if under(imp, prefixes...) {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

// goSystemdOutsideSysd: only internal/sysd talks to systemd through go-systemd.
func goSystemdOutsideSysd(g graph) []string {
	return importersOf(g, []string{"github.com/coreos/go-systemd"}, "internal/sysd")
}

// kongInInternal: flags are parsed in cmd/ only; nothing in internal/ imports kong.
func kongInInternal(g graph) []string {
	var bad []string
	for _, v := range importersOf(g, []string{"github.com/alecthomas/kong"}) {
		if under(strings.Fields(v)[0], "internal") {
			bad = append(bad, v)
		}
	}
	return bad
}

// httpInControl: what the API's routes do (internal/control) is HTTP-free; routing, auth
// and error mapping stay in internal/api. Test files may use net/http.
func httpInControl(g graph) []string {
	var bad []string
	for p, pk := range g {
		if !under(p, "internal/control") {
			continue
		}
		for _, imp := range pk.Imports {
			if under(imp, "net/http") {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// heavyInComputeInit: the compute-init binary (which every start runs, as postgres)
// carries neither the JOSE library nor the Prometheus client; those are the API's. Nor
// grpc-go or the protobuf runtime: its pageserver gRPC client is hand-written
// (internal/pageserver/grpc.go), their package initialisation would be paid at every
// start.
// Only the module's own packages are followed; the rule looks at the third-party
// imports they make.
func heavyInComputeInit(g graph) []string {
	var bad []string
	for p, chain := range reach(g, "cmd/compute-init") {
		for _, imp := range g[p].Imports {
			if under(imp, "github.com/go-jose", "github.com/prometheus", "google.golang.org/grpc", "google.golang.org/protobuf") {
				bad = append(bad, chain+" -> "+imp)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// stdlibOnlyPkgs import the standard library only (not even the module's other
// packages), except the module packages listed with them: their types live in the state
// record or the spec that every binary reads, so a dependency of theirs would be carried
// by all (compute-init carries no Prometheus, compute-api no pgx in them), or on the wire
// of the API, where a client (pkg/computeclient) imports them without the server's
// dependencies (pgopswire: no pgx). Subpackages are not covered
// (internal/extstats/pgcollect uses pgx, internal/extstats/extprom Prometheus).
// internal/promote/promotestate (POST /promote's wire types, in the state record) may
// use internal/spec's LSN, itself standard library only.
var stdlibOnlyPkgs = map[string][]string{
	"internal/spec":                 nil,
	"internal/extstats":             nil,
	"internal/lfc/lfcstate":         nil,
	"internal/pgops/pgopswire":      nil,
	"internal/apiwire":              nil,
	"internal/promote/promotestate": {"internal/spec"},
	// NeonVM's helpers run as root (directly or through a unit): nothing but execx to
	// run them; the systemd connection is the caller's (an interface).
	"internal/neonvm": {"internal/execx"},
	// The pooled VM's warm-up runs processes (execx) on a directory pgdata owns; it
	// needs nothing of the compute's config or state.
	"internal/warmup": {"internal/execx", "internal/paths", "internal/pgdata", "internal/pgready"},
	// The kernel's socket tables, nothing else: x/sys for the netlink request.
	"internal/tcpowner": {"golang.org/x/sys/unix"},
	// The rsyslog configuration is code: rendered and validated by the standard library
	// alone (the caller writes it and restarts the unit).
	"internal/rsyslog": nil,
}

// pgopsOutsideAPIServer: internal/pgops (the Postgres routes' work) is built into
// control's Postgres interface by internal/apiserver only; the API and control reach it
// through that interface (its wire types, pgopswire, are anyone's). Test files may use it.
func pgopsOutsideAPIServer(g graph) []string {
	var bad []string
	for p, pk := range g {
		if under(p, "internal/apiserver", "internal/pgops") {
			continue
		}
		for _, imp := range pk.Imports {
			if imp == "internal/pgops" {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// notStdlibOnly lists the imports of stdlibOnlyPkgs outside the standard library (and
// their allowed module packages): module packages, and paths whose first element has a
// dot (a module path).
func notStdlibOnly(g graph) []string {
	var bad []string
	for p, allowed := range stdlibOnlyPkgs {
		pk := g[p]
		if pk == nil {
			continue
		}
		for _, imp := range pk.Imports {
			if slices.Contains(allowed, imp) {
				continue
			}
			first, _, _ := strings.Cut(imp, "/")
			if g[imp] != nil || imp == "." || strings.Contains(first, ".") {
				bad = append(bad, fmt.Sprintf("%s imports %s", p, imp))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// clientAllowed are the module packages the Go client (pkg/computeclient) may reach:
// the packages of the API's wire types (the server's own request and response types,
// which the client re-exports rather than copies) and what those import. Nothing that
// serves, authenticates, talks to systemd, D-Bus or Postgres: a caller that imports the
// client carries none of it. A new route's wire-type package is added here.
var clientAllowed = []string{
	"internal/apiwire", "internal/statusview", "internal/state", "internal/lfc/lfcstate", "internal/spec",
	// imported by internal/state
	"internal/atomicfile", "internal/extstats",
	// the wire types of the Postgres routes and of /promote
	"internal/pgops/pgopswire", "internal/promote/promotestate",
}

// clientReachesServer lists the module packages outside clientAllowed that a package
// under pkg/ reaches (pkg/ packages are the module's public API for other modules).
func clientReachesServer(g graph) []string {
	var bad []string
	for p := range g {
		if !under(p, "pkg") {
			continue
		}
		for q, chain := range reach(g, p) {
			if !under(q, "pkg") && !slices.Contains(clientAllowed, q) {
				bad = append(bad, chain)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// openapiOutsideTests: kin-openapi is a test dependency: only internal/openapitest
// imports it, and only test files import internal/openapitest.
func openapiOutsideTests(g graph) []string {
	bad := importersOf(g, []string{"github.com/getkin"}, "internal/openapitest")
	for p, pk := range g {
		for _, imp := range pk.Imports {
			if imp == "internal/openapitest" {
				bad = append(bad, fmt.Sprintf("%s imports internal/openapitest outside its tests", p))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// grpcOutsideFakes: grpc-go is the tests' (the fake gRPC pageserver of
// internal/pageservertest, over the generated code of internal/pageserver/pageapi), and
// the generated code is imported outside tests by the fake only: no shipped binary
// carries grpc-go.
func grpcOutsideFakes(g graph) []string {
	bad := importersOf(g, []string{"google.golang.org/grpc"}, "internal/pageservertest", "internal/pageserver/pageapi")
	for p, pk := range g {
		if under(p, "internal/pageservertest") {
			continue
		}
		for _, imp := range pk.Imports {
			if imp == "internal/pageserver/pageapi" {
				bad = append(bad, fmt.Sprintf("%s imports internal/pageserver/pageapi outside its tests", p))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// missingDocs lists the packages under internal/, cmd/ and pkg/ without a package
// comment.
func missingDocs(g graph) []string {
	var bad []string
	for p, pk := range g {
		if under(p, "internal", "cmd", "pkg") && strings.TrimSpace(pk.Doc) == "" {
			bad = append(bad, p)
		}
	}
	slices.Sort(bad)
	return bad
}

// fakeGraph breaks every rule once, so that each test also shows it can fail.
func fakeGraph() graph {
	return graph{
		"cmd/compute-init":    {Imports: []string{"internal/state", "github.com/alecthomas/kong"}, Doc: "Command compute-init."},
		"internal/state":      {Imports: []string{"internal/metrics"}, Doc: "Package state."},
		"internal/metrics":    {Imports: []string{"github.com/prometheus/client_golang/prometheus"}, Doc: "Package metrics."},
		"internal/api":        {Imports: []string{"internal/api/route"}, Doc: "Package api."},
		"internal/api/route":  {Imports: []string{"internal/helper"}, Doc: "Package route."},
		"internal/helper":     {Imports: []string{"internal/pageserver"}, Doc: "Package helper."},
		"internal/pageserver": {Doc: "Package pageserver."},
		"internal/storagetest": {
			Imports: []string{"internal/pageserver"}, Doc: "Package storagetest.",
		},
		"internal/monitor":      {Imports: []string{"internal/apply"}},
		"internal/apply":        {Doc: "Package apply."},
		"internal/sysd":         {Imports: []string{"github.com/coreos/go-systemd/v22/dbus"}, Doc: "Package sysd."},
		"internal/units":        {TestImports: []string{"github.com/coreos/go-systemd/v22/daemon"}, Doc: "Package units."},
		"internal/flags":        {Imports: []string{"github.com/alecthomas/kong"}, Doc: "Package flags."},
		"internal/sysdish":      {Imports: []string{"github.com/coreos/go-systemdx"}, Doc: "Package sysdish."},
		"test/system":           {},
		"internal/apiserver":    {Imports: []string{"internal/apply"}, Doc: "Package apiserver."},
		"internal/vmmonitor/cg": {Imports: []string{"internal/storage/lease"}, Doc: "Package cg."},
		"internal/storage/lease": {
			Doc: "Package lease.",
		},
		"internal/control":      {Imports: []string{"net/http/httptest"}, TestImports: []string{"net/http"}, Doc: "Package control."},
		"internal/controlplane": {Imports: []string{"net/http"}, Doc: "Package controlplane."},
		"internal/extstats": {
			Imports: []string{"encoding/json", "github.com/jackc/pgx/v5", "internal/helper"}, Doc: "Package extstats.",
		},
		"internal/extstats/pgcollect": {Imports: []string{"github.com/jackc/pgx/v5"}, Doc: "Package pgcollect."},
		"internal/pgops/pgopswire":    {Imports: []string{"github.com/jackc/pgx/v5"}, Doc: "Package pgopswire."},
		"internal/pgops":              {Imports: []string{"internal/pgops/pgopswire"}, Doc: "Package pgops."},
		"internal/apiserver/x":        {Imports: []string{"internal/pgops"}, Doc: "Package x."},
		"internal/apitest":            {Imports: []string{"internal/pgops/pgopswire"}, TestImports: []string{"internal/pgops"}, Doc: "Package apitest."},
		"internal/api/pg":             {Imports: []string{"internal/pgops"}, Doc: "Package pg."},
		"internal/spec":               {Doc: "Package spec."},
		"internal/promote/promotestate": {
			Imports: []string{"internal/spec", "internal/state", "time"}, Doc: "Package promotestate.",
		},
		"pkg/client":            {Imports: []string{"internal/statusview", "internal/api"}, Doc: "Package client."},
		"pkg/client/sub":        {Imports: []string{"pkg/client"}, Doc: "Package sub."},
		"internal/statusview":   {Imports: []string{"internal/state"}, Doc: "Package statusview."},
		"internal/openapitest":  {Imports: []string{"github.com/getkin/kin-openapi/openapi3"}, Doc: "Package openapitest."},
		"internal/apiserver/oa": {Imports: []string{"internal/openapitest"}, TestImports: []string{"github.com/getkin/kin-openapi/routers"}, Doc: "Package oa."},
		"internal/apiserver/y":  {TestImports: []string{"internal/openapitest"}, Doc: "Package y."},
	}
}

func TestRulesFailOnViolations(t *testing.T) {
	g := fakeGraph()
	for _, tc := range []struct {
		name string
		rule func(graph) []string
		want []string
	}{
		{"serving packages never reach apply or storage", servingImportsMutator, []string{
			"internal/api -> internal/api/route -> internal/helper -> internal/pageserver",
			"internal/api/route -> internal/helper -> internal/pageserver",
			"internal/monitor -> internal/apply",
			"internal/vmmonitor/cg -> internal/storage/lease",
		}},
		{"only sysd imports go-systemd", goSystemdOutsideSysd, []string{
			"internal/units imports github.com/coreos/go-systemd/v22/daemon",
		}},
		{"nothing in internal imports kong", kongInInternal, []string{
			"internal/flags imports github.com/alecthomas/kong",
		}},
		{"control does not import net/http", httpInControl, []string{
			"internal/control imports net/http/httptest",
		}},
		{"compute-init carries no JOSE or Prometheus", heavyInComputeInit, []string{
			"cmd/compute-init -> internal/state -> internal/metrics -> github.com/prometheus/client_golang/prometheus",
		}},
		{"every package has a doc comment", missingDocs, []string{"internal/monitor"}},
		{"the client reaches only the wire types", clientReachesServer, []string{
			"pkg/client -> internal/api",
			"pkg/client -> internal/api -> internal/api/route",
			"pkg/client -> internal/api -> internal/api/route -> internal/helper",
			"pkg/client -> internal/api -> internal/api/route -> internal/helper -> internal/pageserver",
			"pkg/client -> internal/statusview -> internal/state -> internal/metrics",
			"pkg/client/sub -> pkg/client -> internal/api",
			"pkg/client/sub -> pkg/client -> internal/api -> internal/api/route",
			"pkg/client/sub -> pkg/client -> internal/api -> internal/api/route -> internal/helper",
			"pkg/client/sub -> pkg/client -> internal/api -> internal/api/route -> internal/helper -> internal/pageserver",
			"pkg/client/sub -> pkg/client -> internal/statusview -> internal/state -> internal/metrics",
		}},
		{"kin-openapi and openapitest only in tests", openapiOutsideTests, []string{
			"internal/apiserver/oa imports github.com/getkin/kin-openapi/routers",
			"internal/apiserver/oa imports internal/openapitest outside its tests",
		}},
		{"stdlib-only packages import the standard library only", notStdlibOnly, []string{
			"internal/extstats imports github.com/jackc/pgx/v5",
			"internal/extstats imports internal/helper",
			"internal/pgops/pgopswire imports github.com/jackc/pgx/v5",
			"internal/promote/promotestate imports internal/state",
		}},
		{"only apiserver imports pgops", pgopsOutsideAPIServer, []string{
			"internal/api/pg imports internal/pgops",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.rule(g); !slices.Equal(got, tc.want) {
				t.Errorf("violations\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestImportRules(t *testing.T) {
	g := repoGraph(t)
	for _, tc := range []struct {
		name string
		rule func(graph) []string
	}{
		{"api and the monitors never depend on apply or the pageserver client", servingImportsMutator},
		{"only internal/sysd imports go-systemd", goSystemdOutsideSysd},
		{"nothing in internal/ imports kong", kongInInternal},
		{"internal/control does not import net/http", httpInControl},
		{"internal/spec, internal/extstats, lfcstate, pgopswire and promotestate import the standard library only (and what they may)", notStdlibOnly},
		{"only internal/apiserver imports internal/pgops", pgopsOutsideAPIServer},
		{"pkg/ reaches only the API's wire-type packages", clientReachesServer},
		{"kin-openapi and internal/openapitest only in tests", openapiOutsideTests},
		{"grpc-go and the generated page_api code only in the fake pageserver and tests", grpcOutsideFakes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.rule(g) {
				t.Error(v)
			}
		})
	}
}

func TestComputeInitCarriesNoJOSEOrPrometheus(t *testing.T) {
	g := repoGraph(t)
	bad := heavyInComputeInit(g)
	if len(bad) == 0 {
		return
	}
	for _, v := range bad {
		t.Error(v)
	}
}

func TestPackageDocs(t *testing.T) {
	for _, p := range missingDocs(repoGraph(t)) {
		t.Errorf("%s has no package doc comment", p)
	}
}
