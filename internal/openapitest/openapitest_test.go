package openapitest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const status200 = `{"start_time":"2025-07-17T12:00:00.520Z","tenant":null,"timeline":null,"status":"empty","last_active":null,"error":null}`

// The checks pass what the document describes and fail each kind of drift.
func TestCheck(t *testing.T) {
	v := Load(t)
	jsonCT := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}
	bare := http.Header{"X-Request-Id": {"r1"}}
	tests := []struct {
		name, port, method, path string
		status                   int
		header                   http.Header
		body                     string
		want                     string // "" = valid; else a part of the error
	}{
		{"status ok", External, "GET", "/status", 200, jsonCT, status200, ""},
		{"status HEAD", External, "HEAD", "/status", 200, jsonCT, "", ""},
		{"status missing field", External, "GET", "/status", 200, jsonCT, `{"start_time":"x","status":"empty"}`, "does not match"},
		{"status unknown enum", External, "GET", "/status", 200, jsonCT, strings.Replace(status200, `"empty"`, `"sleeping"`, 1), "does not match"},
		{"undocumented status code", External, "GET", "/status", 418, jsonCT, `{"error":"x"}`, "status 418 is not documented"},
		{"wrong content type", External, "GET", "/status", 200, http.Header{"Content-Type": {"text/plain"}, "X-Request-Id": {"r"}}, status200, "does not match"},
		{"error with extra field", External, "GET", "/status", 401, jsonCT, `{"error":"x","code":1}`, "does not match"},
		{"error ok", External, "GET", "/status", 401, jsonCT, `{"error":"failed to verify authorization token"}`, ""},
		{"no request id", External, "GET", "/status", 200, http.Header{"Content-Type": {"application/json"}}, status200, "X-Request-Id"},
		{"202 empty", External, "POST", "/lfc/prewarm", 202, bare, "", ""},
		{"202 with a body", External, "POST", "/lfc/prewarm", 202, jsonCT, `{}`, "without a body"},
		{"unknown path 404", External, "GET", "/nope", 404, bare, "", ""},
		{"unknown path 404 with body", External, "GET", "/nope", 404, bare, "404 page not found", "router's 404"},
		{"unknown path 200", External, "GET", "/nope", 200, jsonCT, `{}`, "router's 404"},
		{"other method 405", External, "PUT", "/status", 405, http.Header{"X-Request-Id": {"r"}, "Allow": {"GET, HEAD"}}, "", ""},
		{"405 without Allow", External, "PUT", "/status", 405, bare, "", "Allow"},
		{"other method 404", External, "PUT", "/status", 404, bare, "", "router's 405"},
		{"external route on the internal port", Internal, "GET", "/status", 404, bare, "", ""},
		{"external route answered on the internal port", Internal, "GET", "/status", 200, jsonCT, status200, "router's 404"},
		{"wildcard path", Internal, "POST", "/extension_server/lib/x.so", 200, bare, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			err := v.Check(tc.port, r, tc.status, tc.header, []byte(tc.body))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected mismatch: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no mismatch found, want one with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// Wrap passes the response through unchanged and reports a mismatch to the test.
func TestWrapReports(t *testing.T) {
	v := Load(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "r")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("short and stout"))
	})
	rec := &recordingTB{TB: t}
	w := httptest.NewRecorder()
	v.Wrap(rec, External, h).ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	if w.Code != http.StatusTeapot || w.Body.String() != "short and stout" {
		t.Fatalf("response changed: %d %q", w.Code, w.Body.String())
	}
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "418") {
		t.Fatalf("errors %q, want one about 418", rec.errors)
	}
}

type recordingTB struct {
	testing.TB
	errors []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.errors = append(r.errors, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// Transport hands the body on and reports a mismatch to the test.
func TestTransportReports(t *testing.T) {
	v := Load(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "r")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"empty"}`))
	}))
	defer srv.Close()
	rec := &recordingTB{TB: t}
	c := &http.Client{Transport: v.Transport(rec, External, nil)}
	resp, err := c.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != `{"status":"empty"}` {
		t.Fatalf("body %q", b)
	}
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "does not match") {
		t.Fatalf("errors %q, want one schema mismatch", rec.errors)
	}
}
