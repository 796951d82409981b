package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/state"
)

// FuzzRouteDecoders feeds every route that decodes input (a JSON request body or query
// parameters, as api/openapi.yaml documents them) arbitrary bodies, content types and
// query strings, through the whole handler chain with a valid token. The compute is in
// a status where a route with a status rule refuses a decoded request (412), so nothing
// blocks or changes: the fuzzer explores the decoders. It must never panic; every
// answer must be one the document describes (status, content type, schema), every error
// {"error": ...}; the state and the pending config stay untouched.
func FuzzRouteDecoders(f *testing.F) {
	quiet := func(c *harnessConfig) {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		c.api.Logger, c.ctl.Logger = log, log
		c.api.MaxBodyBytes = 64 << 10
	}
	h := newHarness(f, quiet) // no compute-monitor: the LFC requests answer 503
	h.toRunning("neon")
	h.moveTo(state.Init)
	before, err := h.store.Load()
	if err != nil {
		f.Fatal(err)
	}
	v := openapitest.Load(f)
	var routes []routeEntry
	for _, r := range h.srv.routeTable() {
		if r.handler == nil {
			continue
		}
		method, path := concreteRoute(r.pattern)
		op := v.Operation(r.port, method, path)
		in := routeInputs[r.pattern]
		if in.blocks && in.allowed == nil {
			continue // would block in any status
		}
		if op != nil && (len(openapitest.BodyContentTypes(op)) > 0 || len(openapitest.QueryParams(op)) > 0) {
			routes = append(routes, r)
		}
	}
	if len(routes) == 0 {
		f.Fatal("no route decodes input")
	}
	tok := "Bearer " + h.adminToken()
	for i, r := range routes {
		in := routeInputs[r.pattern]
		f.Add(uint8(i), "application/json", "", []byte(in.body))
		f.Add(uint8(i), "application/json", "mode=fast&from_endpoint=ep-1&is_library=true", []byte(in.wrongType))
		f.Add(uint8(i), "application/json; charset=utf-8", "%zz", []byte(`{"spec":null}`))
		f.Add(uint8(i), "text/plain", "mode=immediate", []byte(`[]`))
	}
	f.Add(uint8(0), "application/json", "", []byte(`{"spec":{"cluster":{"roles":[{"name":"r","options":[{"name":"a","vartype":"string","value":"\u0000"}]}]}},"compute_ctl_config":{"jwks":{"keys":[]}}}`))
	f.Add(uint8(0), "application/json", "", []byte(`{"spec":{"mode":{"Static":"FFFFFFFF/FFFFFFFF"},"format_version":1e999},"compute_ctl_config":{}}`))

	f.Fuzz(func(t *testing.T, route uint8, ctype, query string, body []byte) {
		r := routes[int(route)%len(routes)]
		method, path := concreteRoute(r.pattern)
		handler := h.srv.External()
		if r.port == "internal" {
			handler = h.srv.Internal()
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(method, "http://compute"+target, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Authorization", tok)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, req)
		if err := v.Check(r.port, req, w.Code, w.Header(), w.Body.Bytes()); err != nil {
			t.Fatalf("%s ?%q %q: %v", r.pattern, query, body, err)
		}
		if w.Code >= 400 && w.Body.Len() > 0 {
			var e map[string]json.RawMessage
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || len(e) != 1 || e["error"] == nil {
				t.Fatalf("%s: error body %q is not {\"error\": ...}", r.pattern, w.Body.String())
			}
		}
		if slices.Contains([]int{200, 201}, w.Code) && routeInputs[r.pattern].allowed != nil {
			t.Fatalf("%s acted in status init: %d %s", r.pattern, w.Code, w.Body.String())
		}
		after, err := h.store.Load()
		if err != nil || after.Seq != before.Seq || h.pending.count() != 0 {
			t.Fatalf("%s ?%q %q changed the state (seq %d -> %d) or wrote the pending config", r.pattern, query, body, before.Seq, after.Seq)
		}
	})
}
