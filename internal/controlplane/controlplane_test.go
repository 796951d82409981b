package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	computeID = "compute-quiet-wave-12345"
	cpToken   = "cp-token-7d1c2e"
	jwks      = `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"EdDSA","use":"sig"}]}`
	minSpec   = `{"format_version":1.0,"cluster":{"roles":[],"databases":[]},"suspend_timeout_seconds":-1,"tenant_id":"9ef87a5bf0d92544f6fafeeb3239695c"}`
)

var (
	bodyEmpty           = `{"status":"empty","compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyAttached        = `{"status":"attached","spec":` + minSpec + `,"compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyAttachedNoSpec  = `{"status":"attached","spec":null,"compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyUnknownStatus   = `{"status":"frozen","compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyNoCtlConfig     = `{"status":"empty"}`
	bodyBadSpec         = `{"status":"attached","spec":{"cluster":{}},"compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyEmptyButSpec    = `{"status":"empty","spec":` + minSpec + `,"compute_ctl_config":{"jwks":` + jwks + `}}`
	bodyBadJSON         = `{"status":"attached","spec":`
	bodyNotFoundMessage = `{"error":"compute not found"}`
)

type reply struct {
	code int
	body string
}

// cplane is a fake control plane that plays replies in order (the last one repeats) and
// records what it was asked.
type cplane struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	replies []reply
	calls   int
	paths   []string
	auths   []string
}

func newCplane(t *testing.T, replies ...reply) *cplane {
	c := &cplane{t: t, replies: replies}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		i := c.calls
		c.calls++
		c.paths = append(c.paths, r.URL.EscapedPath())
		c.auths = append(c.auths, r.Header.Get("Authorization"))
		c.mu.Unlock()
		if r.Method != http.MethodGet {
			http.Error(w, "method", http.StatusMethodNotAllowed)
			return
		}
		if i >= len(c.replies) {
			i = len(c.replies) - 1
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(c.replies[i].code)
		_, _ = w.Write([]byte(c.replies[i].body))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cplane) numCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func TestFetchConfig(t *testing.T) {
	tests := []struct {
		name      string
		replies   []reply
		wantSpec  bool
		wantErr   string // substring; "" = success
		calls     int
		wantLabel []string
	}{
		{name: "empty", replies: []reply{{200, bodyEmpty}}, calls: 1, wantLabel: []string{"200 OK"}},
		{name: "attached", replies: []reply{{200, bodyAttached}}, wantSpec: true, calls: 1, wantLabel: []string{"200 OK"}},
		{name: "attached without spec", replies: []reply{{200, bodyAttachedNoSpec}},
			wantErr: "compute is attached, but spec is empty", calls: 1, wantLabel: []string{"200 OK"}},
		{name: "empty with a spec drops it", replies: []reply{{200, bodyEmptyButSpec}}, calls: 1, wantLabel: []string{"200 OK"}},
		{name: "502 then 503 then 200", replies: []reply{{502, "bad gateway"}, {503, ""}, {200, bodyAttached}},
			wantSpec: true, calls: 3, wantLabel: []string{"502 Bad Gateway", "503 Service Unavailable", "200 OK"}},
		{name: "503 three times", replies: []reply{{503, "busy"}},
			wantErr: "3 attempts failed", calls: 3,
			wantLabel: []string{"503 Service Unavailable", "503 Service Unavailable", "503 Service Unavailable"}},
		{name: "404 is final", replies: []reply{{404, bodyNotFoundMessage}, {200, bodyAttached}},
			wantErr: "404 Not Found", calls: 1, wantLabel: []string{"404 Not Found"}},
		{name: "500 is final", replies: []reply{{500, "oops"}, {200, bodyAttached}},
			wantErr: "500 Internal Server Error", calls: 1, wantLabel: []string{"500 Internal Server Error"}},
		{name: "401 is final and quotes the body", replies: []reply{{401, "token " + cpToken + " rejected"}, {200, bodyAttached}},
			wantErr: `token <redacted> rejected`, calls: 1, wantLabel: []string{"401 Unauthorized"}},
		{name: "bad JSON then good", replies: []reply{{200, bodyBadJSON}, {200, bodyAttached}},
			wantSpec: true, calls: 2, wantLabel: []string{"200 OK", "200 OK"}},
		{name: "bad JSON every time", replies: []reply{{200, bodyBadJSON}},
			wantErr: "decode control plane response", calls: 3, wantLabel: []string{"200 OK", "200 OK", "200 OK"}},
		{name: "unknown status is a decode error", replies: []reply{{200, bodyUnknownStatus}, {200, bodyEmpty}},
			calls: 2, wantLabel: []string{"200 OK", "200 OK"}},
		{name: "missing compute_ctl_config", replies: []reply{{200, bodyNoCtlConfig}},
			wantErr: "compute_ctl_config", calls: 3, wantLabel: []string{"200 OK", "200 OK", "200 OK"}},
		{name: "invalid spec", replies: []reply{{200, bodyBadSpec}},
			wantErr: "format_version", calls: 3, wantLabel: []string{"200 OK", "200 OK", "200 OK"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cp := newCplane(t, tc.replies...)
			var mu sync.Mutex
			var labels []string
			cfg, err := FetchConfig(context.Background(), cp.srv.Client(), cp.srv.URL, computeID, cpToken,
				WithOnRequest(func(s string) { mu.Lock(); labels = append(labels, s); mu.Unlock() }))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("want an error containing %q, got a config", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q lacks %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), cpToken) {
					t.Fatalf("error leaks the token: %q", err)
				}
			} else {
				if err != nil {
					t.Fatalf("FetchConfig: %v", err)
				}
				if (cfg.Spec != nil) != tc.wantSpec {
					t.Fatalf("spec present = %v, want %v", cfg.Spec != nil, tc.wantSpec)
				}
				if cfg.ComputeCtlConfig == nil || !strings.Contains(string(cfg.ComputeCtlConfig.JWKS), "Ed25519") {
					t.Fatalf("compute_ctl_config not carried over: %+v", cfg.ComputeCtlConfig)
				}
				if tc.wantSpec && (cfg.Spec.TenantID == nil || *cfg.Spec.TenantID != "9ef87a5bf0d92544f6fafeeb3239695c") {
					t.Fatalf("spec not decoded: tenant %v", cfg.Spec.TenantID)
				}
			}
			if got := cp.numCalls(); got != tc.calls {
				t.Fatalf("control plane called %d times, want %d", got, tc.calls)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(labels, ",") != strings.Join(tc.wantLabel, ",") {
				t.Fatalf("metric labels %q, want %q", labels, tc.wantLabel)
			}
		})
	}
}

func TestFetchConfigRequest(t *testing.T) {
	cp := newCplane(t, reply{200, bodyEmpty})
	const id = "odd id/with?chars"
	if _, err := FetchConfig(context.Background(), nil, cp.srv.URL+"/", id, cpToken); err != nil {
		t.Fatalf("FetchConfig: %v", err)
	}
	if want := "/compute/api/v2/computes/odd%20id%2Fwith%3Fchars/spec"; cp.paths[0] != want {
		t.Errorf("path %q, want %q", cp.paths[0], want)
	}
	if cp.auths[0] != "Bearer "+cpToken {
		t.Errorf("Authorization %q, want the bearer token", cp.auths[0])
	}

	// No token: Neon still sends the header, with an empty token.
	cp2 := newCplane(t, reply{200, bodyEmpty})
	if _, err := FetchConfig(context.Background(), nil, cp2.srv.URL, computeID, ""); err != nil {
		t.Fatalf("FetchConfig: %v", err)
	}
	if want := "/compute/api/v2/computes/" + computeID + "/spec"; cp2.paths[0] != want {
		t.Errorf("path %q, want %q", cp2.paths[0], want)
	}
	if strings.TrimSpace(cp2.auths[0]) != "Bearer" {
		t.Errorf("Authorization %q without a token", cp2.auths[0])
	}
}

func TestFetchConfigTransportError(t *testing.T) {
	// A port nobody listens on: every attempt fails in transport and is retried.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var labels []string
	_, err = FetchConfig(context.Background(), nil, "http://"+addr, computeID, cpToken,
		WithOnRequest(func(s string) { labels = append(labels, s) }))
	if err == nil || !strings.Contains(err.Error(), "3 attempts failed") {
		t.Fatalf("err = %v, want 3 failed attempts", err)
	}
	if strings.Join(labels, ",") != "unknown,unknown,unknown" {
		t.Fatalf("labels %q, want three unknown", labels)
	}
}

func TestFetchConfigCancelled(t *testing.T) {
	cp := newCplane(t, reply{503, ""})
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := FetchConfig(ctx, nil, cp.srv.URL, computeID, cpToken, WithOnRequest(func(string) {
		calls++
		cancel() // cancelled during the first retry wait
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Fatalf("%d attempts after cancel, want 1", calls)
	}
}

func TestNormalizeRemoteExtURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "http://ext-gw.local", want: "http://ext-gw.local/"},
		{in: "http://ext-gw.local/", want: "http://ext-gw.local/"},
		{in: "http://ext-gw.local///", want: "http://ext-gw.local/"},
		{in: "https://example.com:8443/pg-ext-s3-gateway", want: "https://example.com:8443/pg-ext-s3-gateway/"},
		{in: "https://example.com/pg-ext-s3-gateway//", want: "https://example.com/pg-ext-s3-gateway/"},
		{in: "http://ext-gw.local/?", wantErr: true}, // the appended "/" lands in the query, as in Neon
		{in: "http://ext-gw.local/?a=1", wantErr: true},
		{in: "http://ext-gw.local?region=eu", wantErr: true},
		{in: "http://ext-gw.local/path?flag", wantErr: true},
		{in: "ext-gw.local", wantErr: true},
		{in: "/just/a/path", wantErr: true},
		{in: "", wantErr: true},
		{in: "http://[::1", wantErr: true},
		{in: "ftp://ext-gw.local", wantErr: true},
	}
	for _, tc := range tests {
		got, err := NormalizeRemoteExtURL(tc.in, true)
		if tc.wantErr {
			if err == nil {
				t.Errorf("NormalizeRemoteExtURL(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeRemoteExtURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// Plain HTTP only when the operator allowed it.
	if _, err := NormalizeRemoteExtURL("http://ext-gw.local", false); !errors.Is(err, ErrPlainHTTP) {
		t.Errorf("http:// without the opt-in: %v, want ErrPlainHTTP", err)
	}
	if got, err := NormalizeRemoteExtURL("https://ext-gw.local", false); err != nil || got != "https://ext-gw.local/" {
		t.Errorf("https:// without the opt-in: %q, %v", got, err)
	}
}

// TestFetchConfigRefusesRedirects: a redirect (to another host, or to the same host over
// another scheme) is not followed, so the bearer token goes nowhere else; the redirect is
// an unexpected status.
func TestFetchConfigRefusesRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhere = append(elsewhere, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte(bodyEmpty))
	}))
	defer other.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	_, err := FetchConfig(context.Background(), nil, redirector.URL, computeID, cpToken)
	if err == nil || !strings.Contains(err.Error(), "307 Temporary Redirect") {
		t.Errorf("err = %v, want the redirect as an unexpected status", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) != 0 {
		t.Errorf("the redirect was followed (Authorization %q)", elsewhere)
	}
}

func TestFetchConfigLogsNoCredentials(t *testing.T) {
	cp := newCplane(t, reply{200, bodyEmpty})
	var logBuf strings.Builder
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	u := strings.Replace(cp.srv.URL, "http://", "http://user:url-secret@", 1) + "/?key=query-secret"
	if _, err := FetchConfig(context.Background(), nil, u, computeID, cpToken, WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logBuf.String(), "url-secret") || strings.Contains(logBuf.String(), "query-secret") || !strings.Contains(logBuf.String(), "REDACTED") {
		t.Errorf("log %q", logBuf.String())
	}
	for in, want := range map[string]string{
		"https://u:p@cp.example/base?token=t&x=1": "https://REDACTED@cp.example/base?token=REDACTED&x=REDACTED",
		"http://cp.example:8080/":                 "http://cp.example:8080/",
		"::bad":                                   "(unparsable URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A control plane that stalls (no answer, or an answer whose body stops) is an attempt
// that failed in transport once the client's timeout passed: retried, then the call
// fails; it never hangs.
func TestFetchConfigStall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header bool
	}{{"no answer", false}, {"body stops", true}} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusOK)
					w.Write([]byte(`{"status":`))
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}))
			defer srv.Close()
			defer close(release)
			var labels []string
			client := &http.Client{Timeout: 200 * time.Millisecond}
			_, err := FetchConfig(context.Background(), client, srv.URL, computeID, cpToken,
				WithOnRequest(func(s string) { labels = append(labels, s) }))
			if err == nil || !strings.Contains(err.Error(), "3 attempts failed") || !strings.Contains(err.Error(), "Timeout") {
				t.Fatalf("err = %v, want 3 attempts failed on the timeout", err)
			}
			if len(labels) != 3 {
				t.Fatalf("labels %q, want 3 attempts", labels)
			}
		})
	}
}
