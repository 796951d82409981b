package lfc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/lfc/lfctest"
)

const (
	token    = "sekrit-storage-token-123"
	tenant   = "3aa8fcc61f6d357410b7de754b1d9001"
	timeline = "de200bd42b49cc1814412c7e592dd6e9"
	endpoint = "ep-quiet-bird-123"
	objPath  = "/" + tenant + "/" + timeline + "/" + endpoint + "/lfc_state"
)

func endpointOf(s *lfctest.Storage) lfc.Endpoint {
	return lfc.Endpoint{Addr: s.Addr(), Token: token, TenantID: tenant, TimelineID: timeline, EndpointID: endpoint}
}

// logBuf captures a logger's output, to check that the token never appears.
func logBuf() (*bytes.Buffer, *slog.Logger) {
	var b bytes.Buffer
	return &b, slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func noToken(t *testing.T, what string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, token) {
			t.Errorf("%s contains the token: %s", what, s)
		}
	}
}

func TestClientPutGet(t *testing.T) {
	s := lfctest.NewStorage(t)
	logs, log := logBuf()
	c := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Logger: log})
	ctx := context.Background()
	if err := c.Put(ctx, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "")
	if err != nil || string(got) != "frame" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	// from_endpoint reads another endpoint's state.
	other := "/" + tenant + "/" + timeline + "/ep-other/lfc_state"
	s.Put(other, []byte("theirs"))
	if got, err := c.Get(ctx, "ep-other"); err != nil || string(got) != "theirs" {
		t.Fatalf("Get(ep-other) = %q, %v", got, err)
	}
	reqs := s.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, want := range []struct{ method, path string }{{"PUT", objPath}, {"GET", objPath}, {"GET", other}} {
		if reqs[i].Method != want.method || reqs[i].Path != want.path || reqs[i].Authorization != "Bearer "+token {
			t.Errorf("request %d: %+v, want %s %s with the bearer token", i, reqs[i], want.method, want.path)
		}
	}
	if string(reqs[0].Body) != "frame" {
		t.Errorf("PUT body %q", reqs[0].Body)
	}
	noToken(t, "log", logs.String())
	if !strings.Contains(logs.String(), objPath) {
		t.Errorf("the URL is not logged: %s", logs)
	}
}

func TestClientFaults(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mode   lfctest.Mode
		getErr string // "" = no error
		putErr string
		notFnd bool
	}{
		{name: "404", mode: lfctest.NotFound, notFnd: true, putErr: "request to endpoint storage failed: 404 Not Found"},
		{name: "500", mode: lfctest.ServerError, getErr: "500 Internal Server Error querying endpoint storage",
			putErr: "request to endpoint storage failed: 500 Internal Server Error"},
		{name: "hang", mode: lfctest.Hang, getErr: "querying endpoint storage: ", putErr: "writing to endpoint storage: "},
		{name: "truncated", mode: lfctest.Truncated, getErr: "getting request body from endpoint storage: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := lfctest.NewStorage(t)
			s.SetMode(tc.mode)
			logs, log := logBuf()
			c := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Timeout: 200 * time.Millisecond, Logger: log})
			_, err := c.Get(ctx, "")
			switch {
			case tc.notFnd:
				if !errors.Is(err, lfc.ErrNotFound) {
					t.Errorf("Get: %v, want ErrNotFound", err)
				}
			case err == nil || !strings.HasPrefix(err.Error(), tc.getErr):
				t.Errorf("Get: %v, want %q...", err, tc.getErr)
			}
			err2 := c.Put(ctx, []byte("x"))
			if tc.putErr == "" {
				if err2 != nil {
					t.Errorf("Put: %v", err2)
				}
			} else if err2 == nil || !strings.HasPrefix(err2.Error(), tc.putErr) {
				t.Errorf("Put: %v, want %q...", err2, tc.putErr)
			}
			for _, e := range []error{err, err2} {
				if e != nil {
					noToken(t, "error", e.Error())
				}
			}
			noToken(t, "log", logs.String())
		})
	}
}

func TestClientHangIsCancelledByContext(t *testing.T) {
	s := lfctest.NewStorage(t)
	s.SetMode(lfctest.Hang)
	c := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "")
		done <- err
	}()
	// The request must have reached the fake before the cancel.
	for len(s.Requests()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Get: %v, want context.Canceled", err)
	}
}

func TestClientBounds(t *testing.T) {
	s := lfctest.NewStorage(t)
	s.Put(objPath, bytes.Repeat([]byte("x"), 101))
	c := lfc.NewClient(endpointOf(s), lfc.ClientOptions{MaxBytes: 100, Logger: slog.New(slog.DiscardHandler)})
	if _, err := c.Get(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Errorf("Get of a body over the bound: %v", err)
	}
	s.Put(objPath, bytes.Repeat([]byte("x"), 100))
	if b, err := c.Get(context.Background(), ""); err != nil || len(b) != 100 {
		t.Errorf("Get of a body at the bound: %d bytes, %v", len(b), err)
	}
}

// A redirect is not followed: it could take the bearer token to another host.
func TestClientDoesNotFollowRedirects(t *testing.T) {
	var followed atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed.Store(true) }))
	defer other.Close()
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	defer redir.Close()
	c := lfc.NewClient(lfc.Endpoint{Addr: strings.TrimPrefix(redir.URL, "http://"), Token: token, TenantID: tenant,
		TimelineID: timeline, EndpointID: endpoint}, lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	if _, err := c.Get(context.Background(), ""); err == nil || err.Error() != "302 Found querying endpoint storage" {
		t.Errorf("Get: %v", err)
	}
	if err := c.Put(context.Background(), []byte("x")); err == nil || err.Error() != "request to endpoint storage failed: 302 Found" {
		t.Errorf("Put: %v", err)
	}
	if followed.Load() {
		t.Error("the redirect was followed")
	}
}

// An endpoint id that is not a plain name is refused: from_endpoint must not reach
// another path in endpoint storage.
func TestClientRefusesInvalidEndpointIDs(t *testing.T) {
	s := lfctest.NewStorage(t)
	c := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	for _, id := range []string{"..", ".", "a/b", "a/b?c", "../" + endpoint, "ep%2F..", "ep x", "ep.1", "é", token + "/.."} {
		if u, err := c.URL(id); err == nil || !strings.HasPrefix(err.Error(), "invalid endpoint id ") {
			t.Errorf("URL(%q) = %q, %v", id, u, err)
		}
		_, err := c.Get(context.Background(), id)
		if err == nil || !strings.HasPrefix(err.Error(), "invalid endpoint id ") {
			t.Errorf("Get(%q): %v", id, err)
		} else {
			noToken(t, "error", err.Error())
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests for invalid endpoint ids", n)
	}
	// This compute's own endpoint id is checked too.
	ep := endpointOf(s)
	ep.EndpointID = "../x"
	if err := lfc.NewClient(ep, lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)}).Put(context.Background(), []byte("x")); err == nil ||
		!strings.HasPrefix(err.Error(), "invalid endpoint id ") {
		t.Errorf("Put with endpoint_id ../x: %v", err)
	}
	for _, id := range []string{"ep-quiet-bird-123", "EP_1", "x"} {
		if u, err := c.URL(id); err != nil || !strings.HasSuffix(u, "/"+id+"/lfc_state") {
			t.Errorf("URL(%q) = %q, %v", id, u, err)
		}
	}
}

func TestClientMissingConfig(t *testing.T) {
	full := lfc.Endpoint{Addr: "127.0.0.1:1", Token: token, TenantID: tenant, TimelineID: timeline, EndpointID: endpoint}
	for _, tc := range []struct {
		name string
		edit func(*lfc.Endpoint)
		want string
	}{
		{"endpoint", func(e *lfc.Endpoint) { e.EndpointID = "" }, "endpoint_id missing, other endpoint_id not provided"},
		{"addr", func(e *lfc.Endpoint) { e.Addr = "" }, "endpoint_storage_addr missing"},
		{"token", func(e *lfc.Endpoint) { e.Token = "" }, "endpoint_storage_token missing"},
		{"tenant", func(e *lfc.Endpoint) { e.TenantID = "" }, "tenant_id missing"},
		{"timeline", func(e *lfc.Endpoint) { e.TimelineID = "" }, "timeline_id missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := full
			tc.edit(&ep)
			c := lfc.NewClient(ep, lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
			if _, err := c.Get(context.Background(), ""); err == nil || err.Error() != tc.want {
				t.Errorf("Get: %v, want %q", err, tc.want)
			}
			if err := c.Put(context.Background(), nil); err == nil || err.Error() != tc.want {
				t.Errorf("Put: %v, want %q", err, tc.want)
			}
		})
	}
	// Without this compute's endpoint id, another endpoint's state can still be read.
	ep := full
	ep.EndpointID = ""
	if u, err := lfc.NewClient(ep, lfc.ClientOptions{}).URL("ep-other"); err != nil || !strings.HasSuffix(u, "/ep-other/lfc_state") {
		t.Errorf("URL(ep-other) = %q, %v", u, err)
	}
}

// An address that quotes the token (a misconfiguration) does not put it in an error.
func TestClientRedactsTheToken(t *testing.T) {
	for _, addr := range []string{"bad host " + token, "127.0.0.1:1"} {
		logs, log := logBuf()
		c := lfc.NewClient(lfc.Endpoint{Addr: addr, Token: token, TenantID: tenant, TimelineID: timeline, EndpointID: token},
			lfc.ClientOptions{Timeout: time.Second, Logger: log})
		_, err := c.Get(context.Background(), "")
		if err == nil {
			t.Fatalf("Get from %q succeeded", addr)
		}
		noToken(t, "Get error", err.Error())
		err = c.Put(context.Background(), []byte("x"))
		if err == nil {
			t.Fatalf("Put to %q succeeded", addr)
		}
		noToken(t, "Put error", err.Error())
		if !strings.Contains(err.Error(), "<redacted>") {
			t.Errorf("Put error without the mark: %v", err)
		}
		noToken(t, "log", logs.String())
	}
}

// A cancelled request whose error would quote the token stays recognisable as a cancel.
func TestClientRedactedCancel(t *testing.T) {
	s := lfctest.NewStorage(t)
	s.SetMode(lfctest.Hang)
	ep := endpointOf(s)
	ep.EndpointID = token // a misconfiguration that puts the token in the URL
	c := lfc.NewClient(ep, lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		name string
		want error
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancel", context.Canceled, func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
		{"deadline", context.DeadlineExceeded, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			n := len(s.Requests())
			done := make(chan error, 1)
			go func() { done <- c.Put(ctx, []byte("x")) }()
			for len(s.Requests()) == n {
				time.Sleep(time.Millisecond)
			}
			if tc.want == context.Canceled {
				cancel()
			}
			err := <-done
			if !errors.Is(err, tc.want) {
				t.Errorf("Put: %v, want %v", err, tc.want)
			}
			noToken(t, "error", err.Error())
		})
	}
}
