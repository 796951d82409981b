package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// The default body limit is the reference's 2 MB (axum's DefaultBodyLimit), answered 413
// with axum's text.
func TestDefaultBodyLimit(t *testing.T) {
	h := newHarness(t)
	if DefaultMaxBodyBytes != 2<<20 {
		t.Fatalf("DefaultMaxBodyBytes = %d, want 2 MiB", DefaultMaxBodyBytes)
	}
	pad := func(n int) string {
		b := configBody(neonSpec)
		return b + strings.Repeat(" ", n-len(b))
	}
	w := h.do(h.srv.External(), "POST", "/configure", pad(2<<20+1), withToken(h.computeToken()), jsonBody())
	expect(t, w, http.StatusRequestEntityTooLarge, msgBodyTooBig)
	if h.pending.count() != 0 || h.status() != state.Empty {
		t.Fatal("a refused body changed something")
	}
	// Exactly at the limit the body is read (and here accepted).
	resp := h.async(context.Background(), "POST", "/configure", pad(2<<20), withToken(h.computeToken()), jsonBody())
	h.waitStatus(state.ConfigurationPending)
	h.moveTo(state.Init, state.Running)
	expect(t, <-resp, 200, "")
}

// Long routes answer after the server's read and write timeouts: /configure and
// /terminate block until the compute moved, and lift the connection's deadlines once
// their request is read. A short route still has them.
func TestLongRoutesOutliveServerTimeouts(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newHarness(t)
	srv := httptest.NewUnstartedServer(h.srv.External())
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = timeout, timeout
	srv.Start()
	defer srv.Close()
	post := func(path, token, body string) (int, string, error) {
		req, err := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	type answer struct {
		code int
		body string
		err  error
	}

	// /configure from empty: answered once running, long after both timeouts.
	done := make(chan answer, 1)
	go func() {
		code, body, err := post("/configure", h.computeToken(), configBody(neonSpec))
		done <- answer{code, body, err}
	}()
	h.waitStatus(state.ConfigurationPending)
	time.Sleep(3 * timeout)
	h.moveTo(state.Init, state.Running)
	if a := <-done; a.err != nil || a.code != 200 || !strings.Contains(a.body, `"status":"running"`) {
		t.Fatalf("/configure past the timeouts: %d %s %v", a.code, a.body, a.err)
	}

	// /terminate: the stop hook takes longer than both timeouts.
	release := make(chan struct{})
	stop := neonStopHook(h.store, testLSN)
	h.units.hook = func() error { <-release; return stop() }
	go func() {
		code, body, err := post("/terminate", h.adminToken(), "")
		done <- answer{code, body, err}
	}()
	h.waitStatus(state.TerminationPendingFast)
	time.Sleep(3 * timeout)
	close(release)
	if a := <-done; a.err != nil || a.code != 200 || !strings.Contains(a.body, testLSN) {
		t.Fatalf("/terminate past the timeouts: %d %s %v", a.code, a.body, a.err)
	}
}

// At most Options.ConfigureParses /configure bodies are read and parsed at once: a
// second request waits while the first one's body is still arriving, and goes on when
// it is done.
func TestConfigureParsesBounded(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.api.ConfigureParses = 1 })
	h.toRunning(spec.StorageNeon)
	pr, pw := io.Pipe()
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		r := httptest.NewRequest("POST", "/configure", pr)
		r.Header.Set("Authorization", "Bearer "+h.computeToken())
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.srv.External().ServeHTTP(w, r)
		first <- w
	}()
	body := configBody(neonSpec)
	if _, err := pw.Write([]byte(body[:10])); err != nil { // the first holds the slot
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	second := h.async(ctx, "POST", "/configure", body, withToken(h.computeToken()), jsonBody())
	for h.srv.parses.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	// Waiting, the second has not read or parsed its body, nor touched the state.
	if h.pending.count() != 0 || h.status() != state.Running {
		t.Fatal("the waiting request went on")
	}
	// A waiter whose client goes away leaves.
	cancel()
	expect(t, <-second, http.StatusServiceUnavailable, "request cancelled")
	if h.pending.count() != 0 {
		t.Fatal("a cancelled waiter wrote the pending config")
	}
	// A new waiter goes on once the first is parsed.
	third := h.async(context.Background(), "POST", "/configure", body, withToken(h.computeToken()), jsonBody())
	for h.srv.parses.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := pw.Write([]byte(body[10:])); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	// Both are parsed now: one reconfigures the running compute, the other is refused by
	// the status it finds.
	var waiting <-chan *httptest.ResponseRecorder
	select {
	case w := <-first:
		expect(t, w, http.StatusPreconditionFailed, "")
		waiting = third
	case w := <-third:
		expect(t, w, http.StatusPreconditionFailed, "")
		waiting = first
	}
	h.moveTo(state.Running)
	expect(t, <-waiting, 200, "")
}
