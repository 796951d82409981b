package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/apiwire"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/statusview"
)

// The tests below hold api/openapi.yaml to the code without a YAML library: the document
// is written in plain block style (two-space indents), and only a few of its keys are
// read line by line.

const openapiPath = "../../api/openapi.yaml"

// The ports of the document's servers and the handler behind each.
const (
	externalPort = "3080"
	internalPort = "3081"
)

// neonRoutes are compute_ctl's routes (compute_tools/src/http/server.rs), probed so that a route we add
// later cannot go undocumented.
var neonRoutes = []string{
	"/status", "/metrics", "/metrics.json", "/configure", "/terminate",
	"/check_writability", "/insights", "/dbs_and_roles", "/database_schema",
	"/lfc/prewarm", "/lfc/offload", "/promote",
	"/extension_server/{filename}", "/extensions", "/grants", "/failpoints",
}

// probeMethods are the methods probed on every candidate path. HEAD is checked apart:
// Go's router serves it with every GET route.
var probeMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}

type route struct{ port, method, path string }

type openapiDoc struct {
	lines   []string
	servers []string       // ports of the top-level servers
	routes  map[route]bool // documented operations
	paths   map[string]bool
}

var (
	pathItemRe  = regexp.MustCompile(`^  (/[^\s:]*):\s*$`)
	operationRe = regexp.MustCompile(`^    (get|put|post|delete|options|head|patch|trace):\s*$`)
	serverURLRe = regexp.MustCompile(`^\s*- url:\s*"?([^"\s]+)"?\s*$`)
	refRe       = regexp.MustCompile(`\$ref:\s*"?#/components/(\w+)/(\w+)"?`)
	// Route patterns written as string literals in the package's code.
	patternRe  = regexp.MustCompile(`"(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[^"\s]*)"`)
	wildcardRe = regexp.MustCompile(`\{(\w+)(?:\.\.\.)?\}`)
)

func readOpenAPI(t *testing.T) *openapiDoc {
	t.Helper()
	b, err := os.ReadFile(openapiPath)
	if err != nil {
		t.Fatalf("read %s: %v", openapiPath, err)
	}
	d := &openapiDoc{routes: map[route]bool{}, paths: map[string]bool{}}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		d.lines = append(d.lines, strings.TrimRight(sc.Text(), " \t\r"))
	}
	if len(d.lines) == 0 || d.lines[0] != "openapi: 3.0.3" {
		t.Fatalf("%s does not start with `openapi: 3.0.3`", openapiPath)
	}

	section := ""
	var curPath string
	var curPorts, curMethods []string
	inPathServers := false
	flush := func() {
		if curPath == "" {
			return
		}
		if len(curPorts) == 0 {
			t.Errorf("path %s has no servers: say which port serves it", curPath)
		}
		if len(curMethods) == 0 {
			t.Errorf("path %s has no operation", curPath)
		}
		d.paths[curPath] = true
		for _, p := range curPorts {
			for _, m := range curMethods {
				d.routes[route{p, m, curPath}] = true
			}
		}
		curPath, curPorts, curMethods = "", nil, nil
	}
	for _, l := range d.lines {
		if l == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if !strings.HasPrefix(l, " ") {
			flush()
			section = strings.TrimSuffix(strings.Fields(l)[0], ":")
			continue
		}
		switch section {
		case "servers":
			if m := serverURLRe.FindStringSubmatch(l); m != nil {
				d.servers = append(d.servers, urlPort(t, m[1]))
			}
		case "paths":
			if m := pathItemRe.FindStringSubmatch(l); m != nil {
				flush()
				curPath = m[1]
				inPathServers = false
				continue
			}
			if l == "    servers:" {
				inPathServers = true
				continue
			}
			if indent(l) == 4 {
				inPathServers = false
			}
			if m := operationRe.FindStringSubmatch(l); m != nil {
				curMethods = append(curMethods, strings.ToUpper(m[1]))
				continue
			}
			if inPathServers {
				if m := serverURLRe.FindStringSubmatch(l); m != nil {
					curPorts = append(curPorts, urlPort(t, m[1]))
				}
			}
		}
	}
	flush()
	return d
}

func urlPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Port() == "" {
		t.Fatalf("server url %q has no port", raw)
	}
	return u.Port()
}

func indent(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// block returns the lines nested under the line equal to header (which must be unique).
func (d *openapiDoc) block(t *testing.T, header string) []string {
	t.Helper()
	start := slices.Index(d.lines, header)
	if start < 0 {
		t.Fatalf("%s has no line %q", openapiPath, header)
	}
	depth := indent(header)
	var out []string
	for _, l := range d.lines[start+1:] {
		if l != "" && indent(l) <= depth {
			break
		}
		out = append(out, l)
	}
	return out
}

// sub returns the lines nested under key (at any depth) within lines.
func sub(lines []string, key string) []string {
	for i, l := range lines {
		if strings.TrimSpace(l) != key+":" {
			continue
		}
		var out []string
		for _, m := range lines[i+1:] {
			if m != "" && indent(m) <= indent(l) {
				break
			}
			out = append(out, m)
		}
		return out
	}
	return nil
}

// keys returns the mapping keys at the shallowest indent of lines.
func keys(lines []string) []string {
	depth := -1
	var out []string
	for _, l := range lines {
		if l == "" {
			continue
		}
		if depth < 0 {
			depth = indent(l)
		}
		if indent(l) == depth {
			if k, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
				out = append(out, k)
			}
		}
	}
	return out
}

// schemaProperties lists the properties of components/schemas/name.
func (d *openapiDoc) schemaProperties(t *testing.T, name string) []string {
	t.Helper()
	props := keys(sub(d.block(t, "    "+name+":"), "properties"))
	sort.Strings(props)
	return props
}

// schemaEnum lists the enum of components/schemas/name, in the document's order (block
// style "- value" lines).
func (d *openapiDoc) schemaEnum(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	for _, l := range sub(d.block(t, "    "+name+":"), "enum") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "- "); ok {
			out = append(out, strings.Trim(v, `"`))
		}
	}
	return out
}

// concrete turns a path template into a path to request.
func concrete(tmpl string) string { return wildcardRe.ReplaceAllString(tmpl, "x") }

// sourcePatterns returns the paths of the route patterns written in the package's code
// (as templates, {name...} written {name}).
func sourcePatterns(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range patternRe.FindAllStringSubmatch(string(b), -1) {
			out = append(out, wildcardRe.ReplaceAllString(m[1], "{$1}"))
		}
	}
	return out
}

// probe sends an unauthenticated request with an empty body. routed is false only for
// the router's own answers: 404 or 405 with an empty body (every handler answers with
// a body). Without a token, the JWT routes stop at the authentication check, so probes
// change nothing.
func probe(t *testing.T, h http.Handler, method, path string) (code int, routed bool) {
	t.Helper()
	// Only bounds a handler that would block; nothing depends on the duration.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := httptest.NewRequest(method, path, strings.NewReader("")).WithContext(ctx)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	bare := (w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed) && w.Body.Len() == 0
	return w.Code, !bare
}

// TestOpenAPIRoutes checks that every operation of the document is served on its port and
// that nothing else is: every candidate path (documented, compute_ctl's, the patterns in
// this package's code, and a few others) is probed with every method on both ports.
func TestOpenAPIRoutes(t *testing.T) {
	d := readOpenAPI(t)
	if len(d.routes) == 0 {
		t.Fatal("no operations found in the document")
	}
	if !slices.Equal(d.servers, []string{externalPort, internalPort}) {
		t.Fatalf("top-level servers ports = %v, want [%s %s]", d.servers, externalPort, internalPort)
	}
	h := newHarness(t)
	handlers := map[string]http.Handler{externalPort: h.srv.External(), internalPort: h.srv.Internal()}
	for r := range d.routes {
		if handlers[r.port] == nil {
			t.Errorf("%s %s is documented on port %s, which is not one of ours", r.method, r.path, r.port)
		}
	}

	candidates := map[string]bool{"/": true, "/nope": true, "/status/x": true, "/configure/": true, "/v1/status": true}
	for p := range d.paths {
		candidates[p] = true
	}
	for _, p := range neonRoutes {
		candidates[p] = true
	}
	for _, p := range sourcePatterns(t) {
		candidates[p] = true
	}

	for port, handler := range handlers {
		for tmpl := range candidates {
			var allowed []string
			for _, m := range probeMethods {
				if d.routes[route{port, m, tmpl}] {
					allowed = append(allowed, m)
				}
			}
			for _, m := range probeMethods {
				code, routed := probe(t, handler, m, concrete(tmpl))
				documented := d.routes[route{port, m, tmpl}]
				switch {
				case documented && !routed:
					t.Errorf("port %s: %s %s is documented but not served (%d)", port, m, tmpl, code)
				case !documented && routed:
					t.Errorf("port %s: %s %s is served (%d) but not documented in %s", port, m, tmpl, code, openapiPath)
				case !documented && len(allowed) == 0 && code != http.StatusNotFound:
					t.Errorf("port %s: %s %s = %d, want 404 (no such path)", port, m, tmpl, code)
				case !documented && len(allowed) > 0 && code != http.StatusMethodNotAllowed:
					t.Errorf("port %s: %s %s = %d, want 405 (path has %v)", port, m, tmpl, code, allowed)
				}
			}
			if slices.Contains(allowed, "GET") {
				if code, routed := probe(t, handler, "HEAD", concrete(tmpl)); !routed {
					t.Errorf("port %s: HEAD %s = %d, want served as GET is", port, tmpl, code)
				}
			}
		}
	}
}

// TestOpenAPIReferences checks that every $ref names a component the document defines.
func TestOpenAPIReferences(t *testing.T) {
	d := readOpenAPI(t)
	defined := map[string]bool{}
	for _, kind := range keys(d.block(t, "components:")) {
		for _, name := range keys(d.block(t, "  "+kind+":")) {
			defined[kind+"/"+name] = true
		}
	}
	n := 0
	for i, l := range d.lines {
		for _, m := range refRe.FindAllStringSubmatch(l, -1) {
			n++
			if !defined[m[1]+"/"+m[2]] {
				t.Errorf("line %d: $ref to undefined #/components/%s/%s", i+1, m[1], m[2])
			}
		}
	}
	if n == 0 {
		t.Fatal("no $ref found")
	}
}

// jsonKeys lists the top-level keys of v's JSON form.
func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPISchemasMatchCode checks the response schemas against the types the handlers
// encode, and the status enum against the state package.
func TestOpenAPISchemasMatchCode(t *testing.T) {
	d := readOpenAPI(t)
	rec := state.Record{Status: state.Running, StartTime: time.Now()}
	for _, tc := range []struct {
		schema string
		value  any
	}{
		{"ComputeStatusResponse", statusview.Of(rec)},
		{"ComputeMetrics", rec.Metrics},
		{"ComputeInsights", pgopswire.Insights{}},
		{"DbsAndRoles", pgopswire.CatalogObjects{}},
		{"CatalogRole", pgopswire.Role{}},
		{"CatalogDatabase", pgopswire.Database{}},
		{"ExtensionInstallRequest", pgopswire.ExtensionInstallRequest{}},
		{"ExtensionInstallResponse", pgopswire.ExtensionInstallResponse{}},
		{"SetRoleGrantsRequest", pgopswire.SetRoleGrantsRequest{}},
		{"SetRoleGrantsResponse", pgopswire.SetRoleGrantsResponse{}},
		{"TerminateResponse", apiwire.TerminateResponse{}},
	} {
		got, want := d.schemaProperties(t, tc.schema), jsonKeys(t, tc.value)
		if !slices.Equal(got, want) {
			t.Errorf("schema %s has properties %v; the code encodes %v", tc.schema, got, want)
		}
	}
	var want []string
	for _, s := range state.All {
		want = append(want, string(s))
	}
	if got := d.schemaEnum(t, "ComputeStatus"); !slices.Equal(got, want) {
		t.Errorf("ComputeStatus enum = %v, want %v", got, want)
	}
	// The LFC states: the union of a failed and a completed state's keys (error only when
	// failed, the timings only when completed), and the status enums.
	union := func(vs ...any) []string {
		var all []string
		for _, v := range vs {
			all = append(all, jsonKeys(t, v)...)
		}
		slices.Sort(all)
		return slices.Compact(all)
	}
	for _, tc := range []struct {
		schema string
		keys   []string
	}{
		{"LfcPrewarmState", union(lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed}, lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted})},
		{"LfcOffloadState", union(lfcstate.OffloadState{Status: lfcstate.OffloadFailed}, lfcstate.OffloadState{Status: lfcstate.OffloadCompleted})},
	} {
		if got := d.schemaProperties(t, tc.schema); !slices.Equal(got, tc.keys) {
			t.Errorf("schema %s has properties %v; the code encodes %v", tc.schema, got, tc.keys)
		}
	}
	var prewarm, offload []string
	for _, s := range lfcstate.PrewarmStatuses {
		prewarm = append(prewarm, string(s))
	}
	for _, s := range lfcstate.OffloadStatuses {
		offload = append(offload, string(s))
	}
	if got := d.schemaEnum(t, "LfcPrewarmState"); !slices.Equal(got, prewarm) {
		t.Errorf("LfcPrewarmState status enum = %v, want %v", got, prewarm)
	}
	if got := d.schemaEnum(t, "LfcOffloadState"); !slices.Equal(got, offload) {
		t.Errorf("LfcOffloadState status enum = %v, want %v", got, offload)
	}
	var privileges []string
	for _, p := range pgopswire.Privileges {
		privileges = append(privileges, string(p))
	}
	if got := d.schemaEnum(t, "Privilege"); !slices.Equal(got, privileges) {
		t.Errorf("Privilege enum = %v, want %v", got, privileges)
	}
	if got := fmt.Sprint(d.schemaProperties(t, "GenericError")); got != "[error]" {
		t.Errorf("GenericError properties = %s, want [error]", got)
	}
}
