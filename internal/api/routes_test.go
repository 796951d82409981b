package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const neonSpec = `{"format_version":1.0,"suspend_timeout_seconds":-1,"cluster":{"roles":[],"databases":[]},` +
	`"tenant_id":"` + testTenant + `","timeline_id":"` + testTimeline + `",` +
	`"pageserver_connstring":"postgresql://no_user@localhost:64000","safekeeper_connstrings":["localhost:5454"]}`

func configBody(specJSON string) string {
	return `{"spec":` + specJSON + `,"compute_ctl_config":{"jwks":{"keys":[]}}}`
}

func TestAuthOnEveryRoute(t *testing.T) {
	h := newHarness(t)
	routes := []struct{ method, path string }{
		{"GET", "/status"},
		{"GET", "/metrics.json"},
		{"POST", "/configure"},
		{"POST", "/terminate"},
		{"POST", "/check_writability"},
		{"GET", "/insights"},
		{"GET", "/dbs_and_roles"},
		{"GET", "/database_schema?database=postgres"},
	}
	wrongID := h.token(map[string]any{"compute_id": "someone-else"})
	noID := h.token(map[string]any{})
	adminNoAud := h.token(map[string]any{"scope": auth.AdminScope})
	cases := []struct {
		name   string
		opts   []reqOpt
		status int
		msg    string
	}{
		{"no header", nil, 400, auth.MsgInvalidToken},
		{"basic", []reqOpt{withHeader("Authorization", "Basic x")}, 400, auth.MsgInvalidToken},
		{"garbage", []reqOpt{withToken("garbage")}, 401, auth.MsgVerifyFailed},
		{"admin without aud", []reqOpt{withToken(adminNoAud)}, 401, auth.MsgMissingAudience},
		{"no compute_id", []reqOpt{withToken(noID)}, 403, auth.MsgMissingComputeID},
		{"wrong compute_id", []reqOpt{withToken(wrongID)}, 403, auth.MsgInvalidComputeID},
	}
	for _, rt := range routes {
		for _, c := range cases {
			t.Run(rt.method+rt.path+"/"+c.name, func(t *testing.T) {
				opts := append([]reqOpt{jsonBody()}, c.opts...)
				w := h.do(h.srv.External(), rt.method, rt.path, configBody(neonSpec), opts...)
				expect(t, w, c.status, c.msg)
			})
		}
	}
	// Refused requests changed nothing.
	if st := h.status(); st != state.Empty {
		t.Fatalf("status = %s after refused requests, want empty", st)
	}
	if n := h.pending.count(); n != 0 {
		t.Fatalf("pending config written %d times by refused requests", n)
	}
	if len(h.units.stops)+h.units.cancelStartups != 0 {
		t.Fatal("units touched by refused requests")
	}
	// The token never reaches the log.
	if tok := h.computeToken(); strings.Contains(h.logs.String(), wrongID[:40]) || strings.Contains(h.logs.String(), tok[:40]) {
		t.Fatal("a token appears in the log")
	}
	// /metrics needs no token; /status works with a valid one and with an admin token.
	expect(t, h.do(h.srv.External(), "GET", "/metrics", ""), 200, "")
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken())), 200, "")
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(h.adminToken())), 200, "")
}

func TestSetVerifier(t *testing.T) {
	h := newHarness(t)
	tok := h.computeToken()
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(tok)), 200, "")
	if err := h.srv.SetJWKS(json.RawMessage(`{"keys":[]}`)); err != nil {
		t.Fatal(err)
	}
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(tok)), 401, auth.MsgVerifyFailed)
	h.srv.SetVerifier(nil)
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(tok)), 401, auth.MsgVerifyFailed)
}

// A key rotation drops the tokens verified (and cached) under the old keys.
func TestKeyRotationDropsCachedTokens(t *testing.T) {
	h := newHarness(t)
	old := h.computeToken()
	for range 2 { // the second answer comes from the token cache
		expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(old)), 200, "")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q,"kid":"k2"}]}`, base64.RawURLEncoding.EncodeToString(pub))
	if err := h.srv.SetJWKS(json.RawMessage(jwks)); err != nil {
		t.Fatal(err)
	}
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(old)), 401, auth.MsgVerifyFailed)
	h.key = priv
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken())), 200, "")
	// SetVerifier too.
	v, err := auth.NewVerifier(nil, testComputeID)
	if err != nil {
		t.Fatal(err)
	}
	h.srv.SetVerifier(v)
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken())), 401, auth.MsgVerifyFailed)
}

func TestStatusBeforeAnyState(t *testing.T) {
	h := newHarness(t)
	w := h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken()))
	expect(t, w, 200, "")
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	want := `{"start_time":"2025-07-17T12:00:00.520Z","tenant":null,"timeline":null,"status":"empty","last_active":null,"error":null}`
	if got := w.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

func TestStatusFields(t *testing.T) {
	h := newHarness(t)
	h.moveTo(state.Init)
	start := time.Date(2025, 7, 17, 12, 0, 1, 123456789, time.UTC)
	active := time.Date(2025, 7, 17, 12, 5, 0, 0, time.FixedZone("CEST", 2*3600))
	_, err := statetest.Set(h.store, state.Failed, func(r *state.Record) {
		r.StartTime = start
		r.LastActive = &active
		tenant := testTenant
		r.Tenant = &tenant
		r.SetError("startup: basebackup: \"boom\"")
	})
	if err != nil {
		t.Fatal(err)
	}
	w := h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken()))
	expect(t, w, 200, "")
	want := `{"start_time":"2025-07-17T12:00:01.123456789Z","tenant":"` + testTenant + `","timeline":null,` +
		`"status":"failed","last_active":"2025-07-17T10:05:00+00:00","error":"startup: basebackup: \"boom\""}`
	if got := w.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

func TestMetricsJSON(t *testing.T) {
	h := newHarness(t)
	_, err := h.store.Update(func(r *state.Record) error {
		r.Metrics = state.Metrics{WaitForSpecMs: 1, SyncSKCheckMs: 2, SyncSafekeepersMs: 3, PageserverConnectMicros: 4,
			BasebackupMs: 5, BasebackupBytes: 6, StartPostgresMs: 7, ConfigMs: 8, TotalStartupMs: 9, LoadExtMs: 10,
			NumExtDownloaded: 11, LargestExtSize: 12, TotalExtDownloadSize: 13}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w := h.do(h.srv.External(), "GET", "/metrics.json", "", withToken(h.computeToken()))
	expect(t, w, 200, "")
	var got map[string]uint64
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	names := []string{"wait_for_spec_ms", "sync_sk_check_ms", "sync_safekeepers_ms", "pageserver_connect_micros",
		"basebackup_ms", "basebackup_bytes", "start_postgres_ms", "config_ms", "total_startup_ms", "load_ext_ms",
		"num_ext_downloaded", "largest_ext_size", "total_ext_download_size"}
	if len(got) != len(names) {
		t.Fatalf("got %d fields, want %d: %s", len(got), len(names), w.Body.String())
	}
	for i, n := range names {
		if got[n] != uint64(i+1) {
			t.Errorf("%s = %d, want %d", n, got[n], i+1)
		}
	}
}

func TestPrometheusMetrics(t *testing.T) {
	h := newHarness(t)
	scrape := func() string {
		w := h.do(h.srv.External(), "GET", "/metrics", "")
		expect(t, w, 200, "")
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("Content-Type = %q", ct)
		}
		return w.Body.String()
	}
	if body := scrape(); !strings.Contains(body, `compute_ctl_up{build_tag="v1.2.3",status="empty"} 1`) {
		t.Fatalf("no compute_ctl_up for empty in:\n%s", body)
	}
	if _, err := statetest.Set(h.store, state.ConfigurationPending, nil); err != nil {
		t.Fatal(err)
	}
	body := scrape()
	if !strings.Contains(body, `compute_ctl_up{build_tag="v1.2.3",status="configuration-pending"} 1`) {
		t.Fatalf("no hyphenated compute_ctl_up in:\n%s", body)
	}
	if n := strings.Count(body, "compute_ctl_up{"); n != 1 {
		t.Fatalf("%d compute_ctl_up samples, want 1", n)
	}
	for _, m := range []string{"# TYPE compute_ctl_up gauge", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	// The counters other units keep in the state record, as compute_ctl names them; they
	// survive the reset of a new lifecycle.
	for _, f := range []func() error{
		func() error { return h.store.CountCplaneRequest("GetConfig", "503 Service Unavailable") },
		func() error { return h.store.CountCplaneRequest("GetConfig", "200 OK") },
		func() error { return h.store.CountCplaneRequest("GetConfig", "503 Service Unavailable") },
		func() error { return h.store.CountRemoteExtRequest("200 OK", "anon.tar.zst") },
		func() error { return h.store.CountRemoteExtRequest("unknown", "postgis.tar.zst") },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := h.store.CountMigrationFailure("7"); err != nil {
			t.Fatal(err)
		}
	}
	// The downtime figures compute-monitor writes: the gauge of this lifecycle, the counter
	// across lifecycles.
	body = scrape()
	for _, m := range []string{
		"# TYPE compute_pg_current_downtime_ms gauge", "compute_pg_current_downtime_ms 0\n",
		"# TYPE compute_pg_downtime_ms_total counter", "compute_pg_downtime_ms_total 0\n",
	} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q in:\n%s", m, body)
		}
	}
	if _, err := h.store.Update(func(r *state.Record) error {
		r.PGCurrentDowntimeMs = 1500
		r.Counters.PGDowntimeMsTotal = 4000
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if body = scrape(); !strings.Contains(body, "compute_pg_current_downtime_ms 1500\n") || !strings.Contains(body, "compute_pg_downtime_ms_total 4000\n") {
		t.Errorf("downtime metrics not served from the record:\n%s", body)
	}
	// A compute that failed (or stopped) during an outage: the monitor stopped writing, the
	// record keeps its last figure, which is no current downtime.
	statetest.MustSet(t, h.store, state.Failed, nil)
	if body = scrape(); !strings.Contains(body, "compute_pg_current_downtime_ms 0\n") || !strings.Contains(body, "compute_pg_downtime_ms_total 4000\n") {
		t.Errorf("current downtime of a failed compute not 0:\n%s", body)
	}
	statetest.MustSet(t, h.store, state.Running, nil)
	if body = scrape(); !strings.Contains(body, "compute_pg_current_downtime_ms 1500\n") {
		t.Errorf("current downtime of a running compute not served:\n%s", body)
	}
	if _, err := statetest.Reset(h.store); err != nil {
		t.Fatal(err)
	}
	body = scrape()
	for _, m := range []string{
		"compute_pg_current_downtime_ms 0\n",
		"compute_pg_downtime_ms_total 4000\n",
		"# TYPE compute_ctl_cplane_requests_total counter",
		`compute_ctl_cplane_requests_total{http_status="503 Service Unavailable",rpc="GetConfig"} 2`,
		`compute_ctl_cplane_requests_total{http_status="200 OK",rpc="GetConfig"} 1`,
		"# TYPE compute_ctl_remote_ext_requests_total counter",
		`compute_ctl_remote_ext_requests_total{filename="anon.tar.zst",http_status="200 OK"} 1`,
		`compute_ctl_remote_ext_requests_total{filename="postgis.tar.zst",http_status="unknown"} 1`,
		`compute_ctl_db_migration_failed_total{migration_id="7"} 2`,
	} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q in:\n%s", m, body)
		}
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newHarness(t)
	tok := withToken(h.computeToken())
	tests := []struct {
		name    string
		handler http.Handler
		method  string
		path    string
		status  int
	}{
		{"unknown path", h.srv.External(), "GET", "/nope", 404},
		{"unknown path with token", h.srv.External(), "POST", "/extension_server/x.so", 404},
		{"GET /configure", h.srv.External(), "GET", "/configure", 405},
		{"POST /status", h.srv.External(), "POST", "/status", 405},
		{"DELETE /terminate", h.srv.External(), "DELETE", "/terminate", 405},
		{"internal root", h.srv.Internal(), "GET", "/", 404},
		{"internal status", h.srv.Internal(), "GET", "/status", 404},
		{"internal failpoints (not in this build)", h.srv.Internal(), "POST", "/failpoints", 404},
		{"internal extensions, wrong method", h.srv.Internal(), "GET", "/extensions", 405},
		{"extensions on the external port", h.srv.External(), "POST", "/extensions", 404},
		{"internal extension_server, wrong method", h.srv.Internal(), "GET", "/extension_server/x.so", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do(tc.handler, tc.method, tc.path, "", tok)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d", w.Code, tc.status)
			}
			if w.Body.Len() != 0 {
				t.Fatalf("body = %q, want empty", w.Body.String())
			}
			if ct := w.Header().Get("Content-Type"); ct != "" {
				t.Fatalf("Content-Type = %q on an empty body", ct)
			}
			if w.Header().Get(requestIDHeader) == "" {
				t.Fatal("no X-Request-Id")
			}
		})
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	h := newHarness(t)
	h.level.Set(slog.LevelDebug)
	tok := h.computeToken()
	// Echoed as given, on success, error and 404.
	for _, path := range []string{"/status", "/nope"} {
		for _, opts := range [][]reqOpt{{withToken(tok)}, nil} {
			w := h.do(h.srv.External(), "GET", path, "", append(opts, withHeader(requestIDHeader, "req-42"))...)
			if got := w.Header().Get(requestIDHeader); got != "req-42" {
				t.Errorf("%s: X-Request-Id = %q, want req-42", path, got)
			}
		}
	}
	// Generated when missing: a fresh UUIDv4 each time.
	a := h.do(h.srv.External(), "GET", "/status", "", withToken(tok)).Header().Get(requestIDHeader)
	b := h.do(h.srv.Internal(), "GET", "/x", "").Header().Get(requestIDHeader)
	if !uuidV4.MatchString(a) || !uuidV4.MatchString(b) || a == b {
		t.Fatalf("generated request IDs %q, %q: want two distinct UUIDv4", a, b)
	}
	// Logged with method, path, status, latency and request ID.
	logs := h.logs.String()
	for _, want := range []string{"method=GET", "path=/status", "status=200", "latency_ms=", "request_id=req-42", "request_id=" + a, "status=404"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, tok[:40]) {
		t.Fatal("token logged")
	}
}

// A client's X-Request-Id that is too long or has other characters than letters, digits
// and "-_.:" is replaced by a new UUID: never echoed, never logged.
func TestBadRequestIDReplaced(t *testing.T) {
	h := newHarness(t)
	h.level.Set(slog.LevelDebug)
	tok := h.computeToken()
	for _, bad := range []string{
		strings.Repeat("a", maxRequestID+1),
		"req 42",
		"req\"42",
		"req-42\nlevel=ERROR msg=forged",
		"<script>",
		"req-é",
	} {
		w := h.do(h.srv.External(), "GET", "/status", "", withToken(tok), withHeader(requestIDHeader, bad))
		expect(t, w, 200, "")
		if got := w.Header().Get(requestIDHeader); !uuidV4.MatchString(got) {
			t.Errorf("X-Request-Id %q answered with %q, want a new UUIDv4", bad, got)
		}
		if strings.Contains(h.logs.String(), bad) {
			t.Errorf("bad X-Request-Id %q logged", bad)
		}
	}
	ok := strings.Repeat("a", maxRequestID-4) + "-_.:"
	w := h.do(h.srv.External(), "GET", "/status", "", withToken(tok), withHeader(requestIDHeader, ok))
	if got := w.Header().Get(requestIDHeader); got != ok {
		t.Errorf("valid X-Request-Id %q answered with %q", ok, got)
	}
}

// At the default level, a successful poll leaves no log line; refusals, errors and state
// changes do, with their request IDs.
func TestPollsLogAtDebug(t *testing.T) {
	h := newHarness(t)
	tok := h.computeToken()
	for _, p := range []string{"/status", "/metrics", "/metrics.json", "/lfc/prewarm"} {
		expect(t, h.do(h.srv.External(), "GET", p, "", withToken(tok), withHeader(requestIDHeader, "poll-"+p[1:])), 200, "")
	}
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken("x.y.z"), withHeader(requestIDHeader, "refused-1")), 401, "")
	expect(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken()), withHeader(requestIDHeader, "term-1")), 200, "")
	logs := h.logs.String()
	if strings.Contains(logs, "poll-") {
		t.Errorf("successful polls logged at info:\n%s", logs)
	}
	for _, want := range []string{"request_id=refused-1", "request_id=term-1"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	h.level.Set(slog.LevelDebug)
	expect(t, h.do(h.srv.External(), "GET", "/status", "", withToken(tok), withHeader(requestIDHeader, "poll-debug")), 200, "")
	if logs := h.logs.String(); !strings.Contains(logs, "level=DEBUG msg=\"http request\"") || !strings.Contains(logs, "request_id=poll-debug") {
		t.Errorf("poll not logged at debug:\n%s", logs)
	}
}

// ---- /configure ----

func TestConfigureRejectsBadRequests(t *testing.T) {
	big := configBody(`{"pad":"` + strings.Repeat("x", 2048) + `"}`)
	tests := []struct {
		name   string
		ctype  string
		body   string
		status int
		msg    string // exact, or prefix when it ends in "*"
	}{
		{"no content type", "", configBody(neonSpec), 415, msgContentType},
		{"text/plain", "text/plain", configBody(neonSpec), 415, msgContentType},
		{"malformed json", "application/json", `{"spec": {`, 400, prefixSyntax + "*"},
		{"not an object", "application/json", `[1,2]`, 422, prefixData + "*"},
		{"missing compute_ctl_config", "application/json", `{"spec":` + neonSpec + `}`, 422, prefixData + "missing field `compute_ctl_config`"},
		{"missing spec", "application/json", `{"compute_ctl_config":{"jwks":{"keys":[]}}}`, 422, prefixData + "missing field `spec`"},
		{"null spec", "application/json", `{"spec":null,"compute_ctl_config":{"jwks":{"keys":[]}}}`, 422, prefixData + "*"},
		{"wrong type in spec", "application/json", configBody(`{"cluster":5}`), 422, prefixData + "spec: cluster: cannot use a json number as an object*"},
		{"invalid spec", "application/json", configBody(strings.Replace(neonSpec, `"tenant_id":"`+testTenant+`",`, "", 1)), 400, "tenant id should be provided"},
		{"too large", "application/json", big, 413, msgBodyTooBig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *harnessConfig) { c.api.MaxBodyBytes = 1024 })
			opts := []reqOpt{withToken(h.computeToken())}
			if tc.ctype != "" {
				opts = append(opts, withHeader("Content-Type", tc.ctype))
			}
			w := h.do(h.srv.External(), "POST", "/configure", tc.body, opts...)
			expect(t, w, tc.status, "")
			msg := errorBody(t, w)
			if p, ok := strings.CutSuffix(tc.msg, "*"); ok {
				if !strings.HasPrefix(msg, p) {
					t.Fatalf("error = %q, want prefix %q", msg, p)
				}
			} else if msg != tc.msg {
				t.Fatalf("error = %q, want %q", msg, tc.msg)
			}
			if strings.HasPrefix(tc.msg, prefixSyntax) || strings.HasPrefix(tc.msg, prefixData) {
				if msg != strings.ToLower(msg) {
					t.Fatalf("extractor error %q is not lower-cased", msg)
				}
			}
			if st := h.status(); st != state.Empty {
				t.Fatalf("status = %s, want empty", st)
			}
			if n := h.pending.count(); n != 0 {
				t.Fatalf("pending config written %d times", n)
			}
		})
	}
}

func TestConfigureWrongStatus(t *testing.T) {
	tests := []struct {
		path   []state.Status
		status int
		msg    string
	}{
		{[]state.Status{state.ConfigurationPending}, 412, "invalid compute status: configuration-pending"},
		{[]state.Status{state.Init}, 412, "invalid compute status: init"},
		{[]state.Status{state.Init, state.Failed}, 412, "invalid compute status: failed"}, // postgres not active
		{[]state.Status{state.TerminationPendingFast}, 412, "invalid compute status: termination-pending-fast"},
		{[]state.Status{state.TerminationPendingImmediate, state.Terminated}, 412, "invalid compute status: terminated"},
	}
	for _, tc := range tests {
		t.Run(string(tc.path[len(tc.path)-1]), func(t *testing.T) {
			h := newHarness(t)
			h.moveTo(tc.path...)
			before, _ := h.store.Load()
			w := h.do(h.srv.External(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
			expect(t, w, tc.status, tc.msg)
			after, _ := h.store.Load()
			if after.Seq != before.Seq || h.pending.count() != 0 {
				t.Fatal("a refused /configure changed the state or wrote the pending config")
			}
		})
	}
}

func TestConfigureBlocksUntilRunning(t *testing.T) {
	h := newHarness(t)
	body := configBody(neonSpec)
	resp := h.async(context.Background(), "POST", "/configure", body, withToken(h.computeToken()), jsonBody())

	h.waitStatus(state.ConfigurationPending)
	// The config was stored, exactly as sent, before the status left empty.
	if h.pending.count() != 1 || string(h.pending.calls[0]) != body || h.pending.statusDuring[0] != state.Empty {
		t.Fatalf("pending config: %d calls, status during write %v", h.pending.count(), h.pending.statusDuring)
	}
	rec, _ := h.store.Load()
	if rec.Tenant == nil || *rec.Tenant != testTenant || rec.Timeline == nil || *rec.Timeline != testTimeline {
		t.Fatalf("tenant/timeline not recorded: %+v", rec)
	}
	// compute-init takes over: init, then running. No answer before running.
	h.moveTo(state.Init)
	select {
	case w := <-resp:
		t.Fatalf("answered before running: %d %s", w.Code, w.Body.String())
	case <-time.After(100 * time.Millisecond):
	}
	h.moveTo(state.Running)
	w := <-resp
	expect(t, w, 200, "")
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["status"] != "running" || got["tenant"] != testTenant || got["timeline"] != testTimeline {
		t.Fatalf("response %s", w.Body.String())
	}
}

// Without a Waker the request still completes, through the periodic recheck.
func TestConfigureWithoutWaker(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.ctl.Waker = nil; c.ctl.Recheck = 20 * time.Millisecond })
	resp := h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	h.waitStatus(state.ConfigurationPending)
	h.moveTo(state.Init, state.Running)
	expect(t, <-resp, 200, "")
}

func TestConfigureFailure(t *testing.T) {
	tests := []struct {
		name, errText, want string
	}{
		{"with error", `basebackup: connection refused "ps-1"`, `compute configuration failed: "basebackup: connection refused \"ps-1\""`},
		{"without error", "", `compute configuration failed: "unknown error"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			resp := h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
			h.waitStatus(state.ConfigurationPending)
			h.moveTo(state.Init)
			if _, failed, err := h.store.Fail(state.ActorConfigure, tc.errText); err != nil || !failed {
				t.Fatalf("fail: %v %v", failed, err)
			}
			expect(t, <-resp, 500, tc.want)
		})
	}
}

func TestConfigurePendingWriteFails(t *testing.T) {
	h := newHarness(t)
	h.pending.err = errors.New("disk full")
	w := h.do(h.srv.External(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	expect(t, w, 500, "store pending config: disk full")
	if st := h.status(); st != state.Empty {
		t.Fatalf("status = %s, want empty", st)
	}
	// A retry that succeeds goes ahead.
	h.pending.err = nil
	resp := h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	h.waitStatus(state.ConfigurationPending)
	h.moveTo(state.Init, state.Running)
	expect(t, <-resp, 200, "")
}

// A client that gives up does not leave the handler blocked.
func TestConfigureClientGoesAway(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.async(ctx, "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	h.waitStatus(state.ConfigurationPending)
	cancel()
	<-resp
	if st := h.status(); st != state.ConfigurationPending {
		t.Fatalf("status = %s, want configuration_pending (compute-init still owns it)", st)
	}
}

// The body is decoded by the real spec package.
func TestConfigureDefaultParsers(t *testing.T) {
	h := newHarness(t)
	w := h.do(h.srv.External(), "POST", "/configure", configBody(`{"cluster":5}`), withToken(h.computeToken()), jsonBody())
	expect(t, w, 422, "")
	if msg := errorBody(t, w); !strings.HasPrefix(msg, prefixData) || !strings.Contains(msg, "cluster") {
		t.Fatalf("error = %q", msg)
	}
}

// ---- /terminate ----

func terminateOK(t *testing.T, w interface {
	Result() *http.Response
}, status int, lsn string) {
	t.Helper()
	res := w.Result()
	defer res.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != status {
		t.Fatalf("status = %d, want %d (%v)", res.StatusCode, status, body)
	}
	v, ok := body["lsn"]
	if !ok || len(body) != 1 {
		t.Fatalf("body %v is not {\"lsn\": ...}", body)
	}
	if lsn == "" {
		if v != nil {
			t.Fatalf("lsn = %v, want null", v)
		}
	} else if v != lsn {
		t.Fatalf("lsn = %v, want %s", v, lsn)
	}
}

func TestTerminateRunningTwice(t *testing.T) {
	h := newHarness(t)
	h.toRunning("neon")
	tok := withToken(h.adminToken())
	terminateOK(t, h.do(h.srv.External(), "POST", "/terminate", "", tok), 200, testLSN)
	if len(h.units.stops) != 1 || h.units.stops[0] || h.units.statusAtStop[0] != state.TerminationPendingFast {
		t.Fatalf("StopPostgres calls %v with status %v, want one fast call in termination_pending_fast", h.units.stops, h.units.statusAtStop)
	}
	terminateOK(t, h.do(h.srv.External(), "POST", "/terminate?mode=immediate", "", tok), 201, testLSN)
	if len(h.units.stops) != 1 {
		t.Fatal("second /terminate stopped Postgres again")
	}
}

func TestTerminateImmediate(t *testing.T) {
	h := newHarness(t)
	h.toRunning("neon")
	terminateOK(t, h.do(h.srv.External(), "POST", "/terminate?mode=immediate", "", withToken(h.adminToken())), 200, testLSN)
	if len(h.units.stops) != 1 || !h.units.stops[0] || h.units.statusAtStop[0] != state.TerminationPendingImmediate {
		t.Fatalf("StopPostgres calls %v with status %v, want one immediate call", h.units.stops, h.units.statusAtStop)
	}
}

// A neon primary's answer waits for the stop hook (its final safekeeper sync gives the
// LSN), however late it comes.
func TestTerminateWaitsForStopHook(t *testing.T) {
	h := newHarness(t)
	h.toRunning("neon")
	h.units.hook = nil // the stop job returns before the final sync is recorded
	resp := h.async(context.Background(), "POST", "/terminate", "", withToken(h.adminToken()))
	h.waitStatus(state.TerminationPendingFast)
	select {
	case w := <-resp:
		t.Fatalf("answered before terminated: %d %s", w.Code, w.Body.String())
	case <-time.After(100 * time.Millisecond):
	}
	if err := neonStopHook(h.store, "0/AB")(); err != nil {
		t.Fatal(err)
	}
	terminateOK(t, <-resp, 200, "0/AB")
}

// A neon replica or static compute has no final sync: like a standalone one, the API
// completes the termination (LSN null) once the stop job is done, whether or not the stop
// hook recorded it first (docs/architecture.md: one condition, Record.NeedsFinalSync).
func TestTerminateNeonSecondaryFinalizes(t *testing.T) {
	for _, mode := range []spec.ModeType{spec.ModeTypeReplica, spec.ModeTypeStatic} {
		h := newHarness(t)
		h.toRunning(spec.StorageNeon)
		if _, err := h.store.Update(func(r *state.Record) error { r.Mode = mode; return nil }); err != nil {
			t.Fatal(err)
		}
		h.units.hook = nil
		terminateOK(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken())), 200, "")
		if st := h.status(); st != state.Terminated {
			t.Fatalf("%s: status = %s", mode, st)
		}
	}
}

func TestTerminateStandaloneFinalizes(t *testing.T) {
	h := newHarness(t)
	h.toRunning("standalone")
	h.units.hook = nil
	terminateOK(t, h.do(h.srv.External(), "POST", "/terminate?mode=fast", "", withToken(h.adminToken())), 200, "")
	if st := h.status(); st != state.Terminated {
		t.Fatalf("status = %s", st)
	}
}

func TestTerminateFromEmpty(t *testing.T) {
	for _, withRecord := range []bool{false, true} {
		h := newHarness(t)
		if withRecord {
			if _, err := statetest.Reset(h.store); err != nil {
				t.Fatal(err)
			}
		}
		terminateOK(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken())), 200, "")
		if h.units.cancelStartups != 1 || len(h.units.stops) != 0 {
			t.Fatalf("CancelStartup %d, StopPostgres %d: want 1, 0", h.units.cancelStartups, len(h.units.stops))
		}
		if st := h.status(); st != state.Terminated {
			t.Fatalf("status = %s", st)
		}
		terminateOK(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken())), 201, "")
	}
}

// A client that gives up waiting for the termination does not leave the handler
// blocked; the termination goes on.
func TestTerminateClientGoesAway(t *testing.T) {
	h := newHarness(t)
	h.toRunning("neon")
	h.units.hook = nil // the final sync never comes
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.async(ctx, "POST", "/terminate", "", withToken(h.adminToken()))
	h.waitStatus(state.TerminationPendingFast)
	cancel()
	expect(t, <-resp, 503, "request cancelled")
	if st := h.status(); st != state.TerminationPendingFast {
		t.Fatalf("status = %s, want termination_pending_fast (the stop hook still owns it)", st)
	}
}

func TestTerminateWrongStatus(t *testing.T) {
	tests := []struct {
		path []state.Status
		msg  string
	}{
		{[]state.Status{state.Init}, "invalid compute status: init"},
		{[]state.Status{state.ConfigurationPending}, "invalid compute status: configuration-pending"},
		{[]state.Status{state.TerminationPendingFast}, "invalid compute status: termination-pending-fast"},
		{[]state.Status{state.Init, state.Failed}, "invalid compute status: failed"},
	}
	for _, tc := range tests {
		t.Run(string(tc.path[len(tc.path)-1]), func(t *testing.T) {
			h := newHarness(t)
			h.moveTo(tc.path...)
			expect(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken())), 412, tc.msg)
			if len(h.units.stops)+h.units.cancelStartups != 0 {
				t.Fatal("units touched")
			}
		})
	}
}

func TestTerminateBadMode(t *testing.T) {
	for _, q := range []string{"mode=slow", "foo=bar", "mode=fast&mode=immediate", "mode=", "mode=FAST"} {
		t.Run(q, func(t *testing.T) {
			h := newHarness(t)
			h.toRunning("neon")
			w := h.do(h.srv.External(), "POST", "/terminate?"+q, "", withToken(h.adminToken()))
			expect(t, w, 400, "")
			errorBody(t, w)
			if st := h.status(); st != state.Running || len(h.units.stops) != 0 {
				t.Fatalf("status %s, stops %v after a bad mode", st, h.units.stops)
			}
		})
	}
}

func TestTerminateUnitFailure(t *testing.T) {
	t.Run("stop postgres", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning("neon")
		h.units.stopErr = errors.New("job failed")
		w := h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken()))
		expect(t, w, 500, "terminate: stop postgres: job failed")
		rec, _ := h.store.Load()
		if rec.Status != state.Failed || rec.Error == nil || *rec.Error != "terminate: stop postgres: job failed" {
			t.Fatalf("record %+v, want failed with the error", rec)
		}
	})
	t.Run("cancel startup", func(t *testing.T) {
		h := newHarness(t)
		h.units.cancelErr = errors.New("no such unit")
		w := h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken()))
		expect(t, w, 500, "terminate: cancel startup: no such unit")
		if st := h.status(); st != state.Failed {
			t.Fatalf("status = %s, want failed", st)
		}
	})
	t.Run("final sync fails", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning("neon")
		h.units.hook = func() error {
			_, _, err := h.store.Fail(state.ActorStopHook, "sync safekeepers: timeout",
				state.TerminationPendingFast, state.TerminationPendingImmediate)
			return err
		}
		expect(t, h.do(h.srv.External(), "POST", "/terminate", "", withToken(h.adminToken())), 500, "sync safekeepers: timeout")
	})
}

// The extension server's route declares the wildcard its handler reads.
func TestExtensionServerRouteWildcard(t *testing.T) {
	h := newHarness(t)
	found := false
	for _, r := range h.srv.routeTable() {
		if r.port == "internal" && strings.HasPrefix(r.pattern, "POST /extension_server/") {
			found = true
			if want := "{" + extensions.FilenameParam + "...}"; !strings.HasSuffix(r.pattern, want) {
				t.Errorf("pattern %q does not end with %q", r.pattern, want)
			}
		}
	}
	if !found {
		t.Error("no POST /extension_server route on the internal port")
	}
}

// TestStatusServesLastGoodRecord: a state file that cannot be read (corrupt, or not a
// file) after a good read gives the last good record, never a 500; compute_ctl's state is
// in memory and always readable.
func TestStatusServesLastGoodRecord(t *testing.T) {
	h := newHarness(t)
	h.moveTo(state.Init, state.Running)
	tok := withToken(h.computeToken())
	good := h.do(h.srv.External(), "GET", "/status", "", tok)
	expect(t, good, 200, "")
	if !strings.Contains(good.Body.String(), `"status":"running"`) {
		t.Fatalf("status before: %s", good.Body.String())
	}

	breakers := []struct {
		name string
		do   func(path string) error
	}{
		{"corrupt", func(p string) error { return os.WriteFile(p, []byte(`{"status":"runn`), 0o600) }},
		{"a directory", func(p string) error {
			return os.Mkdir(p, 0o700)
		}},
	}
	for _, b := range breakers {
		t.Run(b.name, func(t *testing.T) {
			if err := b.do(h.store.Path()); err != nil {
				t.Fatal(err)
			}
			if _, err := h.store.Load(); err == nil {
				t.Fatal("the broken state file reads fine")
			}
			w := h.do(h.srv.External(), "GET", "/status", "", tok)
			expect(t, w, 200, "")
			if w.Body.String() != good.Body.String() {
				t.Errorf("body\n got %s\nwant %s", w.Body.String(), good.Body.String())
			}
			expect(t, h.do(h.srv.External(), "GET", "/metrics.json", "", tok), 200, "")
			m := h.do(h.srv.External(), "GET", "/metrics", "")
			if !strings.Contains(m.Body.String(), `compute_ctl_up{build_tag="v1.2.3",status="running"} 1`) {
				t.Errorf("metrics without the last status:\n%s", m.Body.String())
			}
			if err := os.RemoveAll(h.store.Path()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if !strings.Contains(h.logs.String(), "serving the last record read") {
		t.Errorf("the unreadable state was not logged:\n%s", h.logs.String())
	}
}

// TestStatusUnreadableFromTheStart: with no good read to fall back on, the error is
// answered (500), never an invented record.
func TestStatusUnreadableFromTheStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, state.StateFile), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *harnessConfig) {
		store, err := state.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		c.ctl.Store = store
	})
	w := h.do(h.srv.External(), "GET", "/status", "", withToken(h.computeToken()))
	if w.Code != 500 || !strings.Contains(w.Body.String(), `"error":"read state: `) {
		t.Fatalf("got %d %s", w.Code, w.Body.String())
	}
}
