package lfctest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestInstallAndControlErrors(t *testing.T) {
	inst := pgtest.Shared(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// A name of its own per run: the shared server outlives one run of the test (-count).
	db := fmt.Sprintf("lfctest_standin_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, inst.ConnstrDB(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'neon'").Scan(&v); err != nil || v != "1.6" {
		t.Fatalf("extension row: %q, %v", v, err)
	}
	if err := Install(ctx, conn); err == nil || !strings.HasPrefix(err.Error(), "lfctest: install the stand-in neon extension: ") {
		t.Errorf("second install: %v", err)
	}
	// The stand-in drops like an extension: its functions go with it.
	ctl := Control{Conn: conn}
	if err := ctl.SetProgress(ctx, 1, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DROP EXTENSION neon"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace = 'neon'::regnamespace").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d functions left after DROP EXTENSION (%v)", n, err)
	}
	// Without the control table every Control call fails with a clear error.
	for name, call := range map[string]func() error{
		"SetState":     func() error { return ctl.SetState(ctx, []byte("x")) },
		"FailState":    func() error { return ctl.FailState(ctx, "x") },
		"SetProgress":  func() error { return ctl.SetProgress(ctx, 1, 1, 1) },
		"PrewarmSleep": func() error { return ctl.PrewarmSleep(ctx, time.Second) },
		"FailPrewarm":  func() error { return ctl.FailPrewarm(ctx, "x") },
		"FailInfo":     func() error { return ctl.FailInfo(ctx, "x") },
		"LastPrewarmed": func() error {
			_, _, err := ctl.LastPrewarmed(ctx)
			return err
		},
	} {
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS neon.lfc_standin"); err != nil {
			t.Fatal(err)
		}
		if err := call(); err == nil || !strings.HasPrefix(err.Error(), "lfctest: ") {
			t.Errorf("%s without the stand-in: %v", name, err)
		}
	}
}

func TestStorageModes(t *testing.T) {
	s := NewStorage(t)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return resp.StatusCode, "read: " + err.Error()
		}
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/t/l/e/lfc_state", ""); code != 404 {
		t.Errorf("GET of nothing: %d", code)
	}
	if code, _ := do("PUT", "/t/l/e/lfc_state", "abc"); code != 200 {
		t.Errorf("PUT: %d", code)
	}
	if code, body := do("GET", "/t/l/e/lfc_state", ""); code != 200 || body != "abc" {
		t.Errorf("GET: %d %q", code, body)
	}
	if code, _ := do("DELETE", "/t/l/e/lfc_state", ""); code != 405 {
		t.Errorf("DELETE: %d", code)
	}
	for _, tc := range []struct {
		mode Mode
		code int
		body string
	}{
		{NotFound, 404, "not found\n"},
		{ServerError, 500, "boom\n"},
		{Corrupt, 200, "this is not a zstd frame"},
		{Truncated, 200, "read: unexpected EOF"},
	} {
		s.SetMode(tc.mode)
		if code, body := do("GET", "/t/l/e/lfc_state", ""); code != tc.code || body != tc.body {
			t.Errorf("mode %d: %d %q, want %d %q", tc.mode, code, body, tc.code, tc.body)
		}
	}
	// Corrupt and Truncated store a PUT as OK does.
	s.SetMode(Corrupt)
	if code, _ := do("PUT", "/t/l/e/lfc_state", "def"); code != 200 {
		t.Errorf("PUT in Corrupt: %d", code)
	}
	if b, ok := s.Object("/t/l/e/lfc_state"); !ok || string(b) != "def" {
		t.Errorf("object %q %v", b, ok)
	}
	s.SetMode(Hang)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.Get(s.URL + "/t/l/e/lfc_state"); err == nil {
		t.Error("Hang answered")
	}
	if got := len(s.Requests()); got != 10 {
		t.Errorf("%d requests recorded, want 10", got)
	}
}
