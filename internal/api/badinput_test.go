package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The bad-input tests run over the route table (routeTable), so a new route is covered
// as soon as it is in the table: what a route needs to be exercised (a valid body, the
// statuses it accepts) is in routeInputs below, and a route missing there fails
// TestBadInputCoversEveryRoute. Every answer is also checked against api/openapi.yaml
// (h.do), and every error must be {"error": ...} (errorBody).

// routeInput is what the bad-input tests need to know of a route.
type routeInput struct {
	// body is a valid request body ("" for a route without one).
	body string
	// wrongType is body with a field of the wrong type (422).
	wrongType string
	// allowed lists the statuses in which the route acts; in every other status it
	// answers 412 `invalid compute status: ...` and changes nothing. Nil: the route
	// has no status rule (it is called in every status and must not answer 412).
	allowed []state.Status
	// blocks: in an allowed status the call blocks until the compute moves on (it is
	// then not called by TestEveryStatus; its own tests cover it).
	blocks bool
}

var routeInputs = map[string]routeInput{
	"GET /status":       {},
	"GET /metrics.json": {},
	"GET /metrics":      {},
	// (A failed compute whose Postgres still runs is accepted too; the harness's is not
	// running.)
	"POST /configure": {body: configBody(neonSpec), wrongType: configBody(strings.Replace(neonSpec, `"suspend_timeout_seconds":-1`, `"suspend_timeout_seconds":"soon"`, 1)),
		allowed: []state.Status{state.Empty, state.Running, state.RefreshConfigurationPending}, blocks: true},
	"POST /terminate": {allowed: []state.Status{state.Empty, state.Running, state.Terminated, state.RefreshConfigurationPending}, blocks: true},
	// 500, not 412, in the statuses that allow no refresh (compute_ctl's answer). The
	// harness has no control plane, so every call answers 500 and changes nothing (a
	// running compute would otherwise move to refresh_configuration_pending and answer
	// the next call differently).
	"POST /refresh_configuration":          {},
	"GET /lfc/prewarm":                     {},
	"POST /lfc/prewarm":                    {},
	"DELETE /lfc/prewarm":                  {},
	"GET /lfc/offload":                     {},
	"POST /lfc/offload":                    {},
	"POST /extension_server/{filename...}": {},

	// The Postgres routes of issue 11. Without a
	// Postgres in the harness, /dbs_and_roles and /database_schema answer 500 at once.
	"POST /check_writability": {allowed: []state.Status{state.Running}},
	"GET /insights":           {allowed: []state.Status{state.Running}},
	"GET /dbs_and_roles":      {},
	"GET /database_schema":    {},
	"POST /extensions": {body: `{"extension":"pg_session_jwt","database":"neondb","version":"1.0.0"}`,
		wrongType: `{"extension":"pg_session_jwt","database":["neondb"],"version":"1.0.0"}`, allowed: []state.Status{state.Running}},
	"POST /grants": {body: `{"database":"neondb","schema":"public","privileges":["SELECT"],"role":"neon"}`,
		wrongType: `{"database":"neondb","schema":"public","privileges":"SELECT","role":"neon"}`, allowed: []state.Status{state.Running}},
	// A replica's promotion: only while running (the harness's compute is a primary, so a
	// running one answers 500 "... is not replica").
	"POST /promote": {body: `{"safekeepers":"sk-0:5454","wal_flush_lsn":"0/16B5A50"}`,
		wrongType: `{"safekeepers":["sk-0:5454"],"wal_flush_lsn":"0/16B5A50"}`, allowed: []state.Status{state.Running}},
}

// concreteRoute is the method and a concrete path of a route pattern.
func concreteRoute(pattern string) (method, path string) {
	method, tmpl, _ := strings.Cut(pattern, " ")
	return method, concrete(tmpl)
}

func TestBadInputCoversEveryRoute(t *testing.T) {
	h := newHarness(t)
	for _, r := range h.srv.routeTable() {
		if _, ok := routeInputs[r.pattern]; !ok {
			t.Errorf("route %q has no entry in routeInputs (badinput_test.go): add its valid body and the statuses it accepts", r.pattern)
		}
	}
}

// signedBy makes a token with claims signed by key.
func signedBy(t *testing.T, key ed25519.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Every authenticated route refuses every kind of bad token with the reference's code
// and message, before it looks at anything else, and changes nothing.
func TestBadTokensOnEveryRoute(t *testing.T) {
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMonitor{}
	h := newHarness(t, withMonitor(m))
	h.toRunning("neon")
	past := time.Now().Add(-time.Hour).Unix()
	cases := []struct {
		name   string
		header string
		status int
		msg    string
	}{
		{"missing", "", 400, auth.MsgInvalidToken},
		{"not bearer", "Basic dXNlcjpwYXNz", 400, auth.MsgInvalidToken},
		{"empty bearer", "Bearer ", 400, auth.MsgInvalidToken},
		{"not a JWT", "Bearer not.a.jwt", 401, auth.MsgVerifyFailed},
		{"expired", "Bearer " + h.token(map[string]any{"compute_id": testComputeID, "exp": past}), 401, auth.MsgVerifyFailed},
		{"expired admin", "Bearer " + h.token(map[string]any{"scope": auth.AdminScope, "aud": []string{"compute"}, "exp": past}), 401, auth.MsgVerifyFailed},
		{"wrong key", "Bearer " + signedBy(t, otherKey, map[string]any{"compute_id": testComputeID}), 401, auth.MsgVerifyFailed},
		{"unknown scope", "Bearer " + h.token(map[string]any{"scope": "root", "aud": []string{"compute"}}), 401, auth.MsgVerifyFailed},
		{"admin without audience", "Bearer " + h.token(map[string]any{"scope": auth.AdminScope}), 401, auth.MsgMissingAudience},
		{"admin, wrong audience", "Bearer " + h.token(map[string]any{"scope": auth.AdminScope, "aud": []string{"storage"}}), 401, auth.MsgInvalidAudience},
		// aud as a single string (RFC 7519 allows it; compute_ctl's claims take a list only,
		// so its decoding fails): refused, even with the right audience.
		{"admin, aud a single string", "Bearer " + h.token(map[string]any{"scope": auth.AdminScope, "aud": "compute"}), 401, auth.MsgVerifyFailed},
		{"compute_id, aud a single string", "Bearer " + h.token(map[string]any{"compute_id": testComputeID, "aud": "compute"}), 401, auth.MsgVerifyFailed},
		{"no compute_id", "Bearer " + h.token(map[string]any{"sub": "x"}), 403, auth.MsgMissingComputeID},
		{"wrong compute_id", "Bearer " + h.token(map[string]any{"compute_id": "compute-other"}), 403, auth.MsgInvalidComputeID},
	}
	before, _ := h.store.Load()
	n := 0
	for _, r := range h.srv.routeTable() {
		if r.port != "external" || r.open || r.handler == nil {
			continue
		}
		method, path := concreteRoute(r.pattern)
		in := routeInputs[r.pattern]
		for _, c := range cases {
			t.Run(r.pattern+"/"+c.name, func(t *testing.T) {
				opts := []reqOpt{jsonBody()}
				if c.header != "" {
					opts = append(opts, withHeader("Authorization", c.header))
				}
				// A valid body: the token alone decides.
				w := h.do(h.srv.External(), method, path, in.body, opts...)
				expect(t, w, c.status, c.msg)
				n++
			})
		}
	}
	if n == 0 {
		t.Fatal("no authenticated route found")
	}
	after, _ := h.store.Load()
	if after.Seq != before.Seq || h.pending.count() != 0 || len(h.units.stops) != 0 || len(m.taken()) != 0 {
		t.Fatalf("refused requests changed something: seq %d -> %d, pending %d, stops %v, monitor %v",
			before.Seq, after.Seq, h.pending.count(), h.units.stops, m.taken())
	}
	for _, c := range cases[3:] {
		if tok, ok := strings.CutPrefix(c.header, "Bearer "); ok && len(tok) > 20 && strings.Contains(h.logs.String(), tok[len(tok)-20:]) {
			t.Fatalf("token of case %q in the log", c.name)
		}
	}
}

// Bodies: not JSON, wrong types, unknown fields, huge, wrong content type. A route
// that documents a JSON body answers the reference's extractor codes (415, 400, 422,
// 413) and takes unknown fields; a route without a body ignores one, whatever it is.
func TestBadBodiesOnEveryRoute(t *testing.T) {
	v := openapitest.Load(t)
	const limit = 1024
	huge := `{"pad":"` + strings.Repeat("x", 2*limit) + `"}`
	for _, r := range tableRoutes(t) {
		method, path := concreteRoute(r.pattern)
		in := routeInputs[r.pattern]
		op := v.Operation(r.port, method, path)
		if op == nil {
			t.Fatalf("%s is not documented", r.pattern)
		}
		bodyTypes := openapitest.BodyContentTypes(op)
		takesJSON := slices.Contains(bodyTypes, "application/json")
		if takesJSON != (in.body != "") || (in.body != "") != (in.wrongType != "") {
			t.Fatalf("%s: the document says JSON body %v, routeInputs has body %q and wrong-type body %q", r.pattern, takesJSON, in.body, in.wrongType)
		}
		t.Run(r.pattern, func(t *testing.T) {
			m := &fakeMonitor{}
			h := newHarness(t, withMonitor(m), func(c *harnessConfig) { c.api.MaxBodyBytes = limit })
			// A status in which a decoded body is refused with 412 (nothing blocks), or
			// for routes without a status rule, running.
			h.toRunning("neon")
			if in.allowed != nil {
				h.moveTo(state.Init)
			}
			handler := h.srv.External()
			if r.port == "internal" {
				handler = h.srv.Internal()
			}
			tok := withToken(h.adminToken())
			send := func(ctype, body string) *httptest.ResponseRecorder {
				opts := []reqOpt{tok}
				if ctype != "" {
					opts = append(opts, withHeader("Content-Type", ctype))
				}
				return h.do(handler, method, path, body, opts...)
			}
			if !takesJSON {
				base := send("", "")
				for _, b := range []struct{ ctype, body string }{
					{"application/json", `{"spec": {`}, {"text/plain", "hello"}, {"application/json", huge},
					{"application/x-www-form-urlencoded", "a=b"}, {"application/json", `{"unknown":1}`},
				} {
					w := send(b.ctype, b.body)
					if w.Code != base.Code {
						t.Errorf("%s with body %.20q (%s) = %d, without a body %d", r.pattern, b.body, b.ctype, w.Code, base.Code)
					}
				}
				return
			}
			valid := in.body
			for _, c := range []struct {
				name, ctype, body string
				status            int
				msg               string // prefix
			}{
				{"no content type", "", valid, 415, msgContentType},
				{"text/plain", "text/plain", valid, 415, msgContentType},
				{"form", "application/x-www-form-urlencoded", valid, 415, msgContentType},
				{"bad media type", "application/", valid, 415, msgContentType},
				{"not JSON", "application/json", "hello", 400, prefixSyntax},
				{"truncated JSON", "application/json", valid[:len(valid)/2], 400, prefixSyntax},
				{"two values", "application/json", valid + valid, 400, prefixSyntax},
				{"empty", "application/json", "", 400, prefixSyntax},
				{"not an object", "application/json", `[1,2]`, 422, prefixData},
				{"a string", "application/json", `"x"`, 422, prefixData},
				{"null", "application/json", `null`, 422, prefixData},
				{"wrong types", "application/json", in.wrongType, 422, prefixData},
				{"huge", "application/json", huge, 413, msgBodyTooBig},
				// Decoded: the status decides (412), as for a valid body.
				{"unknown fields", "application/json", strings.Replace(valid, "{", `{"zzz_unknown":[1,{"a":null}],`, 1), 412, "invalid compute status: init"},
				{"+json media type", "application/merge-patch+json; charset=utf-8", valid, 412, "invalid compute status: init"},
			} {
				if mt, _, _ := mime.ParseMediaType(c.ctype); mt != "application/json" && slices.Contains(bodyTypes, mt) {
					continue // another encoding the route documents (a form)
				}
				w := send(c.ctype, c.body)
				if w.Code != c.status {
					t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body.String(), c.status)
					continue
				}
				if msg := errorBody(t, w); !strings.HasPrefix(msg, c.msg) {
					t.Errorf("%s: error %q, want prefix %q", c.name, msg, c.msg)
				}
			}
			if st := h.status(); st != state.Init || h.pending.count() != 0 || len(m.taken()) != 0 {
				t.Fatalf("bad bodies changed something: status %s, pending %d, monitor %v", st, h.pending.count(), m.taken())
			}
		})
	}
}

// tableRoutes are the served routes of the route table.
func tableRoutes(t *testing.T) []routeEntry {
	var out []routeEntry
	for _, r := range newHarness(t).srv.routeTable() {
		if r.handler != nil {
			out = append(out, r)
		}
	}
	return out
}

// Query strings that do not decode: a route that documents query parameters answers
// 400 `failed to deserialize query string: ...`; a route without any ignores the query.
func TestBadQueriesOnEveryRoute(t *testing.T) {
	v := openapitest.Load(t)
	for _, r := range tableRoutes(t) {
		method, path := concreteRoute(r.pattern)
		op := v.Operation(r.port, method, path)
		params := openapitest.QueryParams(op)
		in := routeInputs[r.pattern]
		t.Run(r.pattern, func(t *testing.T) {
			m := &fakeMonitor{}
			h := newHarness(t, withMonitor(m))
			h.toRunning("neon")
			if in.allowed != nil {
				h.moveTo(state.Init)
			}
			handler := h.srv.External()
			if r.port == "internal" {
				handler = h.srv.Internal()
			}
			opts := []reqOpt{withToken(h.adminToken()), jsonBody()}
			base := h.do(handler, method, path, in.body, opts...)
			queries := []string{"%zz", "a=%", "x=1&%"}
			for _, p := range params {
				queries = append(queries, p+"=%zz", p+"=1&"+p+"=2")
			}
			for _, q := range queries {
				w := h.do(handler, method, path+"?"+q, in.body, opts...)
				if len(params) == 0 {
					if w.Code != base.Code {
						t.Errorf("?%s = %d, without it %d (the route takes no query)", q, w.Code, base.Code)
					}
					continue
				}
				if w.Code != http.StatusBadRequest {
					t.Errorf("?%s = %d %s, want 400", q, w.Code, w.Body.String())
					continue
				}
				if msg := errorBody(t, w); !strings.HasPrefix(msg, "failed to deserialize query string: ") {
					t.Errorf("?%s: error %q", q, msg)
				}
			}
		})
	}
}

// Every status: a route with a status rule answers 412 with the hyphenated status in
// every status it does not accept, and changes nothing; a route without one never
// answers 412 for the compute's status.
func TestEveryStatusOnEveryRoute(t *testing.T) {
	for _, r := range tableRoutes(t) {
		method, path := concreteRoute(r.pattern)
		in := routeInputs[r.pattern]
		for _, st := range state.All {
			if in.allowed != nil && slices.Contains(in.allowed, st) {
				continue
			}
			t.Run(r.pattern+"/"+string(st), func(t *testing.T) {
				m := &fakeMonitor{}
				h := newHarness(t, withMonitor(m))
				statetest.MustSet(t, h.store, st, func(rec *state.Record) { rec.Storage, rec.Mode = "neon", "primary" })
				before, _ := h.store.Load()
				handler := h.srv.External()
				if r.port == "internal" {
					handler = h.srv.Internal()
				}
				w := h.do(handler, method, path, in.body, withToken(h.adminToken()), jsonBody())
				if in.allowed == nil {
					if w.Code == http.StatusPreconditionFailed && strings.HasPrefix(errorBody(t, w), "invalid compute status") {
						t.Fatalf("%s in %s: 412 %s, but the route has no status rule", r.pattern, st, w.Body.String())
					}
					return
				}
				expect(t, w, http.StatusPreconditionFailed, "invalid compute status: "+strings.ReplaceAll(string(st), "_", "-"))
				after, _ := h.store.Load()
				if after.Seq != before.Seq || h.pending.count() != 0 || len(h.units.stops)+h.units.cancelStartups != 0 || len(m.taken()) != 0 {
					t.Fatal("a refused call changed something")
				}
			})
		}
	}
}
