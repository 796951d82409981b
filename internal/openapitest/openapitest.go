// Package openapitest holds api/openapi.yaml to the code: it checks every response a
// test's handler produces against the document with kin-openapi (openapi3filter), so the
// document cannot drift from what the handlers answer. It is for tests only: the
// handler tests of internal/api and the client tests of pkg/computeclient wrap the
// handlers of a port with Validator.Wrap, and every request they make is then checked.
//
// What is checked for each request/response pair (Check):
//   - the request's path and method are documented on the port (a path item whose
//     servers name the port): the status code must be one the operation documents
//     (no `default`), the Content-Type one its content lists, the body valid against the
//     schema, a response documented without content must have an empty body; HEAD is
//     checked as the GET operation, with an empty body;
//   - otherwise the answer must be the router's own: 404 (no such path on the port) or
//     405 (the path has other methods, with an Allow header), with an empty body, as the
//     document's "Common behaviour" says;
//   - every response carries X-Request-Id.
package openapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// The ports, as named by the route table of internal/api, and their numbers in the
// document's servers.
const (
	External = "external"
	Internal = "internal"
)

var portNumbers = map[string]string{External: "3080", Internal: "3081"}

// Validator checks responses against the document.
type Validator struct {
	doc *openapi3.T
	// ops are the documented operations, per port.
	ops map[string][]operation

	mu sync.Mutex
	// seen records the documented answers checked: "port METHOD /path status".
	seen map[string]bool
}

type operation struct {
	path   string
	re     *regexp.Regexp
	names  []string
	method string
	item   *openapi3.PathItem
	op     *openapi3.Operation
}

var (
	loadOnce sync.Once
	loaded   *Validator
	loadErr  error
)

// Load reads api/openapi.yaml of the module (found by walking up from the working
// directory to go.mod), validates it as an OpenAPI document, and returns its Validator
// (loaded once per test binary).
func Load(t testing.TB) *Validator {
	t.Helper()
	v, err := LoadDefault()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// LoadDefault is Load without a test: the same Validator, or the error.
func LoadDefault() (*Validator, error) {
	loadOnce.Do(func() {
		var path string
		path, loadErr = documentPath()
		if loadErr == nil {
			loaded, loadErr = LoadFile(path)
		}
	})
	return loaded, loadErr
}

func documentPath() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "api", "openapi.yaml"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("openapitest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// LoadFile reads and validates the document at path.
func LoadFile(path string) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate %s: %w", path, err)
	}
	v := &Validator{doc: doc, ops: map[string][]operation{}, seen: map[string]bool{}}
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		re, names := templateRegexp(path)
		var ports []string
		for _, s := range item.Servers {
			u, err := url.Parse(s.URL)
			if err != nil {
				return nil, fmt.Errorf("path %s: server %q: %w", path, s.URL, err)
			}
			for name, num := range portNumbers {
				if u.Port() == num {
					ports = append(ports, name)
				}
			}
		}
		if len(ports) == 0 {
			return nil, fmt.Errorf("path %s names no port of ours in its servers", path)
		}
		for method, op := range item.Operations() {
			for _, p := range ports {
				v.ops[p] = append(v.ops[p], operation{path: path, re: re, names: names, method: method, item: item, op: op})
			}
		}
	}
	return v, nil
}

var paramRe = regexp.MustCompile(`\{(\w+)\}`)

// templateRegexp turns /a/{x}/b into a regexp; a parameter that ends the path takes the
// rest of it, slashes included (Go's {x...} wildcard).
func templateRegexp(tmpl string) (*regexp.Regexp, []string) {
	var names []string
	var b strings.Builder
	b.WriteString("^")
	rest := tmpl
	for {
		loc := paramRe.FindStringSubmatchIndex(rest)
		if loc == nil {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		b.WriteString(regexp.QuoteMeta(rest[:loc[0]]))
		names = append(names, rest[loc[2]:loc[3]])
		if loc[1] == len(rest) {
			b.WriteString("(.+)")
		} else {
			b.WriteString("([^/]+)")
		}
		rest = rest[loc[1]:]
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()), names
}

// Check checks one response to r on port (External or Internal).
func (v *Validator) Check(port string, r *http.Request, status int, header http.Header, body []byte) error {
	if _, ok := portNumbers[port]; !ok {
		return fmt.Errorf("unknown port %q", port)
	}
	if header.Get("X-Request-Id") == "" {
		return fmt.Errorf("%s %s: %d without X-Request-Id", r.Method, r.URL.Path, status)
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	var found *operation
	var params map[string]string
	pathKnown := false
	for i := range v.ops[port] {
		o := &v.ops[port][i]
		m := o.re.FindStringSubmatch(r.URL.Path)
		if m == nil {
			continue
		}
		pathKnown = true
		if o.method == method {
			found = o
			params = map[string]string{}
			for j, n := range o.names {
				params[n] = m[j+1]
			}
			break
		}
	}
	what := fmt.Sprintf("%s %s (port %s)", r.Method, r.URL.Path, port)
	if found == nil {
		want := http.StatusNotFound
		if pathKnown {
			want = http.StatusMethodNotAllowed
		}
		if status != want || len(body) != 0 {
			return fmt.Errorf("%s is not documented: the answer must be the router's %d with an empty body, got %d with %q", what, want, status, truncate(body))
		}
		if want == http.StatusMethodNotAllowed && header.Get("Allow") == "" {
			return fmt.Errorf("%s: 405 without an Allow header", what)
		}
		return nil
	}
	ref := found.op.Responses.Status(status)
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("%s: status %d is not documented for %s %s (body %q)", what, status, found.method, found.path, truncate(body))
	}
	if r.Method == http.MethodHead || len(ref.Value.Content) == 0 {
		if len(body) != 0 {
			return fmt.Errorf("%s: %d is documented without a body, got %q", what, status, truncate(body))
		}
		if r.Method == http.MethodHead {
			return nil
		}
	}
	v.mu.Lock()
	v.seen[fmt.Sprintf("%s %s %s %d", port, found.method, found.path, status)] = true
	v.mu.Unlock()
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    r,
			PathParams: params,
			Route: &routers.Route{Spec: v.doc, Path: found.path, PathItem: found.item,
				Method: found.method, Operation: found.op},
		},
		Status:  status,
		Header:  header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s: %d %q does not match the document: %w", what, status, truncate(body), err)
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// Operation returns the documented operation that serves method and the concrete path
// on port (HEAD as GET), or nil.
func (v *Validator) Operation(port, method, path string) *openapi3.Operation {
	if method == http.MethodHead {
		method = http.MethodGet
	}
	for _, o := range v.ops[port] {
		if o.method == method && o.re.MatchString(path) {
			return o.op
		}
	}
	return nil
}

// QueryParams lists the names of an operation's query parameters.
func QueryParams(op *openapi3.Operation) []string {
	var out []string
	for _, p := range op.Parameters {
		if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
			out = append(out, p.Value.Name)
		}
	}
	return out
}

// BodyContentTypes lists the media types of an operation's request body (none without
// one).
func BodyContentTypes(op *openapi3.Operation) []string {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return nil
	}
	var out []string
	for ct := range op.RequestBody.Value.Content {
		out = append(out, ct)
	}
	slices.Sort(out)
	return out
}

// Unexercised lists the documented answers ("port METHOD /path status") that no Check
// of this test binary has seen, for a report of what the document says that the tests
// do not show.
func (v *Validator) Unexercised() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for port, ops := range v.ops {
		for _, o := range ops {
			for code := range o.op.Responses.Map() {
				k := fmt.Sprintf("%s %s %s %s", port, o.method, o.path, code)
				if !v.seen[k] {
					out = append(out, k)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// Operations lists the documented operations of port as "METHOD /path".
func (v *Validator) Operations(port string) []string {
	var out []string
	for _, o := range v.ops[port] {
		out = append(out, o.method+" "+o.path)
	}
	slices.Sort(out)
	return out
}

// Wrap returns h with every response checked against the document: a mismatch fails
// the test (t.Errorf). The response goes through to the client as it is written
// (streaming and flushes included); the check runs when the handler returns.
func (v *Validator) Wrap(t testing.TB, port string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		status := tw.status
		if status == 0 {
			status = http.StatusOK
		}
		if err := v.Check(port, r, status, w.Header(), tw.body.Bytes()); err != nil {
			t.Errorf("openapi: %v", err)
		}
	})
}

// teeWriter passes a response through and keeps its status and body.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps io.Copy going through Write (so the body is seen).
func (w *teeWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{w}, r)
}

func (w *teeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport returns a RoundTripper (over base, http.DefaultTransport when nil) that
// checks every response against the document as served on port; a mismatch fails the
// test. The response body is read in full for the check and handed on unread.
func (v *Validator) Transport(t testing.TB, port string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := base.RoundTrip(r)
		if err != nil {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err := v.Check(port, r, resp.StatusCode, resp.Header, body); err != nil {
			t.Errorf("openapi: %v", err)
		}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
