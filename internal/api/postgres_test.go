package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/pgops"
	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// The Postgres routes against a real PostgreSQL 15 (internal/pgtest): handler, control
// and internal/pgops together, effects checked in the catalog.

func withPostgres(p control.Postgres) option {
	return func(c *harnessConfig) { c.ctl.Postgres = p }
}

// pgHarness starts a server (opts: its settings) and a harness whose controller uses it.
func pgHarness(t *testing.T, opts ...pgtest.Option) (*harness, *pgtest.Instance) {
	t.Helper()
	inst := pgtest.Start(t, opts...)
	return newHarness(t, withPostgres(newOps(t, inst.Connstr(), filepath.Join(inst.BinDir, "postgres")))), inst
}

func newOps(t *testing.T, connstr, pgbin string) *pgops.Ops {
	t.Helper()
	ops, err := pgops.New(connstr, pgbin, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func pgConn(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connstr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func pgExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgQuery[T any](t *testing.T, c *pgx.Conn, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// healthCheckTable is the table the spec apply creates (internal/apply).
const healthCheckTable = "CREATE TABLE public.health_check (id serial PRIMARY KEY, updated_at timestamptz DEFAULT now())"

func TestCheckWritability(t *testing.T) {
	h, inst := pgHarness(t)
	c := pgConn(t, inst.Connstr())
	ext := h.srv.External()
	tok := withToken(h.computeToken())

	// Only in running.
	for _, st := range []state.Status{state.Empty, state.Init} {
		if st != state.Empty {
			h.moveTo(st)
		}
		expect(t, h.do(ext, "POST", "/check_writability", "", tok), 412, "invalid compute status: "+st.Display())
	}
	h.toRunning(spec.StorageStandalone)

	// No health_check table (catalog updates skipped): the error, 500.
	w := h.do(ext, "POST", "/check_writability", "", tok)
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.Contains(msg, "health_check") || !strings.Contains(msg, "42P01") {
		t.Fatalf("error = %q, want the missing table", msg)
	}

	pgExec(t, c, healthCheckTable)
	w = h.do(ext, "POST", "/check_writability", "", tok)
	expect(t, w, 200, "")
	if w.Body.String() != "true" || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("body %q (%s), want JSON true", w.Body.String(), w.Header().Get("Content-Type"))
	}
	first := pgQuery[time.Time](t, c, "SELECT updated_at FROM health_check WHERE id = 1")
	expect(t, h.do(ext, "POST", "/check_writability", "", tok), 200, "")
	if second := pgQuery[time.Time](t, c, "SELECT updated_at FROM health_check WHERE id = 1"); !second.After(first) {
		t.Fatalf("updated_at %v after a second check, was %v: not upserted", second, first)
	}
	if n := pgQuery[int](t, c, "SELECT count(*)::int FROM health_check"); n != 1 {
		t.Fatalf("%d rows in health_check, want 1", n)
	}

	// A full disk (SQLSTATE 53100) counts as writable; another error does not.
	pgExec(t, c, `CREATE TABLE errcode (code text)`)
	pgExec(t, c, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = (SELECT code FROM errcode); END $$`)
	pgExec(t, c, `CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON health_check FOR EACH ROW EXECUTE FUNCTION refuse()`)
	pgExec(t, c, `INSERT INTO errcode VALUES ('53100')`)
	w = h.do(ext, "POST", "/check_writability", "", tok)
	expect(t, w, 200, "")
	if w.Body.String() != "true" {
		t.Fatalf("disk full: body %q, want true", w.Body.String())
	}
	pgExec(t, c, `UPDATE errcode SET code = '53200'`) // out of memory
	w = h.do(ext, "POST", "/check_writability", "", tok)
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.Contains(msg, "53200") {
		t.Fatalf("error = %q, want the SQLSTATE", msg)
	}

	// Postgres down: 500.
	inst.Halt(t)
	w = h.do(ext, "POST", "/check_writability", "", tok)
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.Contains(msg, "connect to postgres") {
		t.Fatalf("error = %q", msg)
	}
}

// insightsRows decodes GET /insights, which must be a JSON object (not a string).
func insightsRows(t *testing.T, w *httptest.ResponseRecorder) []map[string]any {
	t.Helper()
	expect(t, w, 200, "")
	var body map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("insights %q is not a JSON object: %v", w.Body.String(), err)
	}
	var rows []map[string]any
	raw, ok := body["pg_stat_statements"]
	if !ok || len(body) != 1 {
		t.Fatalf("insights %q: want exactly the key pg_stat_statements", w.Body.String())
	}
	if err := json.Unmarshal(raw, &rows); err != nil || rows == nil {
		t.Fatalf("pg_stat_statements %s is not an array of objects: %v", raw, err)
	}
	return rows
}

func TestInsights(t *testing.T) {
	h, inst := pgHarness(t, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	c := pgConn(t, inst.Connstr())
	ext := h.srv.External()
	tok := withToken(h.computeToken())

	expect(t, h.do(ext, "GET", "/insights", "", tok), 412, "invalid compute status: empty")
	h.toRunning(spec.StorageStandalone)

	pgExec(t, c, "CREATE EXTENSION pg_stat_statements")
	pgExec(t, c, "CREATE ROLE app LOGIN")
	pgExec(t, c, "SELECT 1 AS admin_marker_query")
	app := pgConn(t, inst.TCPConnstr("app", "", "postgres"))
	pgExec(t, app, "SELECT 1 AS app_marker_query")
	appOID := pgQuery[uint32](t, c, "SELECT oid FROM pg_roles WHERE rolname = 'app'")
	adminOID := pgQuery[uint32](t, c, "SELECT oid FROM pg_roles WHERE rolname = $1", pgtest.AdminUser)

	rows := insightsRows(t, h.do(ext, "GET", "/insights", "", tok))
	found := false
	for _, r := range rows {
		if fmt.Sprint(r["userid"]) == fmt.Sprint(adminOID) {
			t.Fatalf("a statement of the admin role is listed: %v", r)
		}
		if q, _ := r["query"].(string); strings.Contains(q, "app_marker_query") {
			found = true
			if fmt.Sprint(r["userid"]) != fmt.Sprint(appOID) {
				t.Fatalf("app's statement has userid %v, want %d", r["userid"], appOID)
			}
			for _, col := range []string{"calls", "mean_exec_time", "mean_plan_time", "dbid", "queryid"} {
				if _, ok := r[col]; !ok {
					t.Errorf("row has no %s: the whole pg_stat_statements row is sent", col)
				}
			}
		}
	}
	if !found {
		t.Fatalf("app's statement not among the %d rows", len(rows))
	}
	// At most 100, the slowest first.
	for i := 0; i < 120; i++ {
		pgExec(t, app, "SELECT 1"+strings.Repeat(", 1", i)) // a distinct statement each
	}
	rows = insightsRows(t, h.do(ext, "GET", "/insights", "", tok))
	if len(rows) != 100 {
		t.Fatalf("%d rows, want the 100 of LIMIT 100", len(rows))
	}
	mean := func(r map[string]any) float64 { return r["mean_exec_time"].(float64) + r["mean_plan_time"].(float64) }
	for i := 1; i < len(rows); i++ {
		if mean(rows[i]) > mean(rows[i-1]) {
			t.Fatalf("row %d is slower than row %d: not ordered by mean time", i, i-1)
		}
	}
}

// Without pg_stat_statements compute_ctl answers an empty list (200); so do we, both when
// the view does not exist and when the library is not preloaded. Other failures are 500.
func TestInsightsWithoutPgStatStatements(t *testing.T) {
	h, inst := pgHarness(t)
	c := pgConn(t, inst.Connstr())
	ext := h.srv.External()
	tok := withToken(h.computeToken())
	h.toRunning(spec.StorageStandalone)

	w := h.do(ext, "GET", "/insights", "", tok)
	if rows := insightsRows(t, w); len(rows) != 0 || w.Body.String() != `{"pg_stat_statements":[]}` {
		t.Fatalf("no view: %q, want an empty list", w.Body.String())
	}
	pgExec(t, c, "CREATE EXTENSION pg_stat_statements") // not in shared_preload_libraries
	w = h.do(ext, "GET", "/insights", "", tok)
	if rows := insightsRows(t, w); len(rows) != 0 {
		t.Fatalf("not preloaded: %q, want an empty list", w.Body.String())
	}
	inst.Halt(t)
	expect(t, h.do(ext, "GET", "/insights", "", tok), 500, "")
}

func TestDBsAndRoles(t *testing.T) {
	h, inst := pgHarness(t)
	c := pgConn(t, inst.Connstr())
	ext := h.srv.External()
	tok := withToken(h.computeToken())

	pgExec(t, c, "CREATE ROLE \"App User\" LOGIN PASSWORD 'secret-pw'")
	pgExec(t, c, "CREATE DATABASE closed OWNER \"App User\" ALLOW_CONNECTIONS false")
	pgExec(t, c, "CREATE DATABASE \"half dropped\"")
	pgExec(t, c, "UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'half dropped'")

	// Any status: here empty.
	w := h.do(ext, "GET", "/dbs_and_roles", "", tok)
	expect(t, w, 200, "")
	var got pgopswire.CatalogObjects
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Roles     []map[string]json.RawMessage `json:"roles"`
		Databases []map[string]json.RawMessage `json:"databases"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	// Every role of pg_authid (pg_* included), options null.
	if want := pgQuery[int](t, c, "SELECT count(*)::int FROM pg_authid"); len(got.Roles) != want {
		t.Fatalf("%d roles, want the %d of pg_authid", len(got.Roles), want)
	}
	for _, r := range raw.Roles {
		if string(r["options"]) != "null" || len(r) != 3 {
			t.Fatalf("role %v: want name, encrypted_password and null options", r)
		}
	}
	roles := map[string]pgopswire.Role{}
	for _, r := range got.Roles {
		roles[r.Name] = r
	}
	app, ok := roles["App User"]
	if !ok || app.EncryptedPassword == nil || !strings.HasPrefix(*app.EncryptedPassword, "SCRAM-SHA-256$") {
		t.Fatalf("role App User = %+v, want its stored SCRAM hash", app)
	}
	if r := roles["pg_monitor"]; r.Name == "" || r.EncryptedPassword != nil {
		t.Fatalf("pg_monitor = %+v, want listed without a password", r)
	}
	dbs := map[string]pgopswire.Database{}
	for _, d := range got.Databases {
		dbs[d.Name] = d
	}
	for _, d := range raw.Databases {
		if string(d["options"]) != "null" || len(d) != 5 {
			t.Fatalf("database %v: want name, owner, null options, restrict_conn, invalid", d)
		}
	}
	want := map[string]pgopswire.Database{
		"postgres":     {Name: "postgres", Owner: pgtest.AdminUser},
		"template0":    {Name: "template0", Owner: pgtest.AdminUser, RestrictConn: true},
		"closed":       {Name: "closed", Owner: "App User", RestrictConn: true},
		"half dropped": {Name: "half dropped", Owner: pgtest.AdminUser, Invalid: true},
	}
	for name, wd := range want {
		if d := dbs[name]; d.Name != wd.Name || d.Owner != wd.Owner || d.RestrictConn != wd.RestrictConn || d.Invalid != wd.Invalid || d.Options != nil {
			t.Errorf("database %q = %+v, want %+v", name, d, wd)
		}
	}
	if len(got.Databases) != 5 { // and template1
		t.Errorf("%d databases, want 5: %+v", len(got.Databases), got.Databases)
	}

	inst.Halt(t)
	w = h.do(ext, "GET", "/dbs_and_roles", "", tok)
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.Contains(msg, "connect to postgres") {
		t.Fatalf("error = %q", msg)
	}
}

func TestPostgresRoutesWithoutPostgres(t *testing.T) {
	h := newHarness(t)
	h.toRunning(spec.StorageStandalone)
	tok := withToken(h.computeToken())
	for _, tc := range []struct{ method, path string }{
		{"POST", "/check_writability"}, {"GET", "/insights"}, {"GET", "/dbs_and_roles"}, {"GET", "/database_schema?database=postgres"},
	} {
		w := h.do(h.srv.External(), tc.method, tc.path, "", tok)
		expect(t, w, 500, "")
		if msg := errorBody(t, w); !strings.Contains(msg, "no Postgres connection") {
			t.Errorf("%s %s: error %q", tc.method, tc.path, msg)
		}
	}
	if w := h.do(h.srv.External(), "HEAD", "/database_schema?database=postgres", "", tok); w.Code != 500 || w.Body.Len() != 0 {
		t.Errorf("HEAD without Postgres: %d %q", w.Code, w.Body.String())
	}
}

func TestDatabaseSchema(t *testing.T) {
	h, inst := pgHarness(t)
	c := pgConn(t, inst.Connstr())
	ext := h.srv.External()
	tok := withToken(h.computeToken())
	// A name pg_dump would take for a connection string if it were its argument.
	const db = "app db=x"
	pgExec(t, c, `CREATE DATABASE "app db=x"`)
	pgExec(t, pgConn(t, inst.ConnstrDB(db)), "CREATE TABLE marker_table (id int PRIMARY KEY, note text)")

	w := h.do(ext, "GET", "/database_schema?database="+url.QueryEscape(db), "", tok)
	expect(t, w, 200, "")
	if ct := w.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	body := w.Body.String()
	if !strings.HasPrefix(body, "--\n-- PostgreSQL database dump") || !strings.Contains(body, "CREATE TABLE public.marker_table") ||
		!strings.Contains(body, "PostgreSQL database dump complete") {
		t.Fatalf("not the schema dump of %q:\n%s", db, body)
	}
	if strings.Contains(body, "COPY ") {
		t.Fatal("the dump has data: not --schema-only")
	}

	expect(t, h.do(ext, "GET", "/database_schema?database=nope", "", tok), 404, "database does not exist")
	expect(t, h.do(ext, "GET", "/database_schema?database=", "", tok), 404, "database does not exist")
	expect(t, h.do(ext, "GET", "/database_schema", "", tok), 400, "failed to deserialize query string: missing field `database`")
	expect(t, h.do(ext, "GET", "/database_schema?database=a&database=b", "", tok), 400, "failed to deserialize query string: duplicate field `database`")
	expect(t, h.do(ext, "GET", "/database_schema?database=%zz", "", tok), 400, "failed to deserialize query string: malformed query")

	// HEAD: GET's status and headers, without a body.
	for _, tc := range []struct {
		query  string
		status int
		ct     string
	}{
		{"?database=" + url.QueryEscape(db), 200, "text/plain; charset=utf-8"},
		{"?database=nope", 404, "application/json"},
		{"", 400, "application/json"},
	} {
		head := h.do(ext, "HEAD", "/database_schema"+tc.query, "", tok)
		get := h.do(ext, "GET", "/database_schema"+tc.query, "", tok)
		if head.Code != tc.status || get.Code != tc.status || head.Body.Len() != 0 {
			t.Fatalf("%s: HEAD %d (body %q), GET %d; want %d", tc.query, head.Code, head.Body.String(), get.Code, tc.status)
		}
		if ct := head.Header().Get("Content-Type"); ct != tc.ct || ct != get.Header().Get("Content-Type") {
			t.Errorf("%s: HEAD Content-Type %q, GET %q, want %q", tc.query, ct, get.Header().Get("Content-Type"), tc.ct)
		}
		if tc.status != 200 && head.Header().Get("Content-Length") != strconv.Itoa(get.Body.Len()) {
			t.Errorf("%s: HEAD Content-Length %q, GET's body has %d bytes", tc.query, head.Header().Get("Content-Length"), get.Body.Len())
		}
	}

	// pg_dump fails before any output for another reason: 500 with its words.
	pgExec(t, c, "CREATE DATABASE closed ALLOW_CONNECTIONS false")
	w = h.do(ext, "GET", "/database_schema?database=closed", "", tok)
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.HasPrefix(msg, "failed to execute pg_dump: ") || !strings.Contains(msg, "not currently accepting connections") {
		t.Fatalf("error = %q", msg)
	}
}

func TestDatabaseSchemaWithoutPgDump(t *testing.T) {
	inst := pgtest.Start(t)
	// A bin directory without pg_dump.
	h := newHarness(t, withPostgres(newOps(t, inst.Connstr(), filepath.Join(t.TempDir(), "postgres"))))
	w := h.do(h.srv.External(), "GET", "/database_schema?database=postgres", "", withToken(h.computeToken()))
	expect(t, w, 500, "")
	if msg := errorBody(t, w); !strings.HasPrefix(msg, "failed to execute pg_dump: ") || !strings.Contains(msg, "no such file or directory") {
		t.Fatalf("error = %q", msg)
	}
	// HEAD does not run pg_dump (here it would fail): the database exists, so 200, GET's
	// status whenever pg_dump can run.
	w = h.do(h.srv.External(), "HEAD", "/database_schema?database=postgres", "", withToken(h.computeToken()))
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("HEAD: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
}

// pgDumpChildren lists the pg_dump processes this test binary started.
func pgDumpChildren(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var name string
		ppid := -1
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(sc.Text(), "State:"); ok && strings.HasPrefix(strings.TrimSpace(v), "Z") {
				name = "" // a zombie has ended
			}
		}
		if name == "pg_dump" && ppid == os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

// waitFor polls cond until it holds or a minute passes (a bound against a hang, not a
// timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// smallBufListener makes the server's sockets' send buffers small, so that what the
// client has not read yet holds back the handler (and pg_dump) soon.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}

// schemaServer serves the external port over real TCP with small buffers, and returns a
// client whose sockets have small receive buffers.
func schemaServer(t *testing.T, h *harness) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h.srv.External())
	srv.Listener = smallBufListener{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}}
	return srv, client
}

// bigSchema gives database db a schema whose dump is several megabytes (a long table
// comment), far more than the pipe and socket buffers between pg_dump and the client.
func bigSchema(t *testing.T, inst *pgtest.Instance, db string) {
	t.Helper()
	pgExec(t, pgConn(t, inst.Connstr()), "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	c := pgConn(t, inst.ConnstrDB(db))
	pgExec(t, c, "CREATE TABLE big (id int)")
	pgExec(t, c, "DO $$ BEGIN EXECUTE format('COMMENT ON TABLE big IS %L', repeat('schema dump streaming ', 400000)); END $$")
}

// The dump is streamed: the client has its first bytes while pg_dump still runs (held
// back by the client, which reads no further). Then the client goes away, and pg_dump is
// killed: no pg_dump process and no pg_dump session are left.
func TestDatabaseSchemaStreamsAndStopsWithClient(t *testing.T) {
	h, inst := pgHarness(t)
	bigSchema(t, inst, "bigdb")
	srv, client := schemaServer(t, h)
	c := pgConn(t, inst.Connstr())
	if n := len(pgDumpChildren(t)); n != 0 {
		t.Fatalf("%d pg_dump processes before the request", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/database_schema?database=bigdb", nil)
	req.Header.Set("Authorization", "Bearer "+h.computeToken())
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	first := make([]byte, 64)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(first), "--\n-- PostgreSQL database dump") {
		t.Fatalf("first bytes %q", first)
	}
	// pg_dump has not ended: it waits for the client to read on.
	if n := len(pgDumpChildren(t)); n != 1 {
		t.Fatalf("%d pg_dump processes while the client holds the dump back, want 1 (a buffered handler would have run pg_dump to its end)", n)
	}
	if n := pgQuery[int](t, c, "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'pg_dump'"); n != 1 {
		t.Fatalf("%d pg_dump sessions, want 1", n)
	}

	// The client goes away.
	cancel()
	resp.Body.Close()
	waitFor(t, "pg_dump to be killed after the client went away", func() bool { return len(pgDumpChildren(t)) == 0 })
	waitFor(t, "pg_dump's session to end", func() bool {
		return pgQuery[int](t, c, "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'pg_dump'") == 0
	})
}

// A pg_dump that dies after its output began must not give a dump that looks complete:
// the answer is cut off, and the client sees an error, not a clean end.
func TestDatabaseSchemaFailureMidStream(t *testing.T) {
	h, inst := pgHarness(t)
	bigSchema(t, inst, "bigdb")
	srv, client := schemaServer(t, h)

	req, _ := http.NewRequest("GET", srv.URL+"/database_schema?database=bigdb", nil)
	req.Header.Set("Authorization", "Bearer "+h.computeToken())
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	pids := pgDumpChildren(t)
	if len(pids) != 1 {
		t.Fatalf("pg_dump processes %v, want 1", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the answer ended cleanly after pg_dump was killed (%d more bytes)", len(rest))
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("read error: %v", err)
	}
	if strings.Contains(string(rest), "PostgreSQL database dump complete") {
		t.Fatal("the dump's end marker arrived although pg_dump was killed")
	}
	waitFor(t, "pg_dump to be reaped", func() bool { return len(pgDumpChildren(t)) == 0 })
}

func TestExtensionsRoute(t *testing.T) {
	h, inst := pgHarness(t)
	c := pgConn(t, inst.Connstr())
	in := h.srv.Internal()
	const db = `ext "db"`
	pgExec(t, c, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	dbc := pgConn(t, inst.ConnstrDB(db))
	body := func(ext, version string) string {
		b, _ := json.Marshal(pgopswire.ExtensionInstallRequest{Extension: ext, Database: db, Version: version})
		return string(b)
	}
	installed := func() string {
		var v string
		err := dbc.QueryRow(context.Background(), "SELECT extversion FROM pg_extension WHERE extname = 'hstore'").Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	expect(t, h.do(in, "POST", "/extensions", body("hstore", "1.7"), jsonBody()), 412, "invalid compute status: empty")
	if v := installed(); v != "" {
		t.Fatalf("installed %q while not running", v)
	}
	h.toRunning(spec.StorageStandalone)

	for _, step := range []struct{ version, want string }{
		{"1.7", "1.7"}, // created at that version
		{"1.8", "1.8"}, // updated
		{"1.8", "1.8"}, // already there: nothing to do
	} {
		w := h.do(in, "POST", "/extensions", body("hstore", step.version), jsonBody())
		expect(t, w, 201, "")
		if got := w.Body.String(); got != `{"extension":"hstore","version":"`+step.want+`"}` {
			t.Fatalf("body %s", got)
		}
		if v := installed(); v != step.want {
			t.Fatalf("installed version %q, want %q", v, step.want)
		}
	}
	if n := pgQuery[int](t, c, "SELECT count(*)::int FROM pg_extension WHERE extname = 'hstore'"); n != 0 {
		t.Fatal("hstore installed in the postgres database, not the one asked for")
	}

	// Failures: 500 with compute_ctl's prefix; nothing changed.
	for _, tc := range []struct{ body, contains string }{
		{body("hstore", "9.9"), `no update path from version "1.8" to version "9.9"`},
		{body(`hstore"; DROP DATABASE postgres; --`, "1.0"), "invalid extension name"},
		{`{"extension":"hstore","database":"nope","version":"1.8"}`, "connect to postgres"},
	} {
		w := h.do(in, "POST", "/extensions", tc.body, jsonBody())
		expect(t, w, 500, "")
		if msg := errorBody(t, w); !strings.HasPrefix(msg, "failed to install extension: ") || !strings.Contains(msg, tc.contains) {
			t.Fatalf("error %q, want it to say %q", msg, tc.contains)
		}
	}
	if v := installed(); v != "1.8" {
		t.Fatalf("installed %q after failures", v)
	}
	if pgQuery[int](t, c, "SELECT count(*)::int FROM pg_database WHERE datname = 'postgres'") != 1 {
		t.Fatal("the injection attempt ran")
	}

	// Unknown fields are ignored, as serde does.
	pgExec(t, dbc, "DROP EXTENSION hstore")
	w := h.do(in, "POST", "/extensions", `{"extension":"hstore","database":"`+strings.ReplaceAll(db, `"`, `\"`)+`","version":"1.8","extra":1}`, jsonBody())
	expect(t, w, 201, "")
	if v := installed(); v != "1.8" {
		t.Fatalf("installed %q", v)
	}
	badBodies(t, h, "/extensions", body("hstore", "1.8"), "version")
}

// badBodies checks the body rules of an internal POST route: nothing reaches Postgres.
func badBodies(t *testing.T, h *harness, path, good, field string) {
	t.Helper()
	in := h.srv.Internal()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(good), &m); err != nil {
		t.Fatal(err)
	}
	without := func(f string, v json.RawMessage) string {
		c := map[string]json.RawMessage{}
		for k, x := range m {
			c[k] = x
		}
		if v == nil {
			delete(c, f)
		} else {
			c[f] = v
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		body   string
		opts   []reqOpt
		status int
		msg    string
	}{
		{"no content type", good, nil, 415, msgContentType},
		{"text content type", good, []reqOpt{withHeader("Content-Type", "text/plain")}, 415, msgContentType},
		{"not json", `{"extension":`, []reqOpt{jsonBody()}, 400, ""},
		{"empty", ``, []reqOpt{jsonBody()}, 400, ""},
		{"array", `[]`, []reqOpt{jsonBody()}, 422, prefixData + "invalid type: expected an object"},
		{"missing field", without(field, nil), []reqOpt{jsonBody()}, 422, prefixData + "missing field `" + field + "`"},
		{"null field", without(field, json.RawMessage("null")), []reqOpt{jsonBody()}, 422, prefixData + "invalid type: null for field `" + field + "`"},
		{"wrong type", without(field, json.RawMessage("42")), []reqOpt{jsonBody()}, 422, ""},
		{"huge", `{"x":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`, []reqOpt{jsonBody()}, 413, msgBodyTooBig},
	} {
		t.Run(path+"/"+tc.name, func(t *testing.T) {
			w := h.do(in, "POST", path, tc.body, tc.opts...)
			expect(t, w, tc.status, tc.msg)
			errorBody(t, w)
		})
	}
}

func TestGrantsRoute(t *testing.T) {
	h, inst := pgHarness(t, pgtest.WithSetting("log_statement", "all"))
	c := pgConn(t, inst.Connstr())
	in := h.srv.Internal()
	pgExec(t, c, "CREATE DATABASE appdb")
	pgExec(t, c, `CREATE ROLE "app user" LOGIN`)
	dbc := pgConn(t, inst.ConnstrDB("appdb"))
	pgExec(t, dbc, `CREATE SCHEMA "my schema"`)
	has := func(priv string) bool {
		return pgQuery[bool](t, dbc, `SELECT has_schema_privilege('app user', 'my schema', $1)`, priv)
	}
	body := `{"database":"appdb","schema":"my schema","privileges":["USAGE","CREATE"],"role":"app user"}`

	expect(t, h.do(in, "POST", "/grants", body, jsonBody()), 412, "invalid compute status: empty")
	if has("USAGE") {
		t.Fatal("granted while not running")
	}
	h.toRunning(spec.StorageStandalone)

	for i := 0; i < 2; i++ { // the second time, nothing is missing
		w := h.do(in, "POST", "/grants", body, jsonBody())
		expect(t, w, 201, "")
		if w.Body.String() != body {
			t.Fatalf("body %s, want the request echoed %s", w.Body.String(), body)
		}
		if !has("USAGE") || !has("CREATE") {
			t.Fatal("privileges not granted")
		}
	}
	// Only the missing privileges are granted (what the schema's ACL gives the role is
	// read first, so that a replica where all is in place is not written to): the
	// statements the server ran tell.
	grants := func() []string {
		var out []string
		for _, l := range strings.Split(inst.ReadLog(t), "\n") {
			if _, stmt, ok := strings.Cut(l, "statement: "); ok && strings.HasPrefix(stmt, "GRANT ") {
				out = append(out, stmt)
			}
		}
		return out
	}
	if g := grants(); len(g) != 1 || g[0] != `GRANT USAGE, CREATE ON SCHEMA "my schema" TO "app user"` {
		t.Fatalf("GRANT statements %q, want one, for both privileges, the second call none", g)
	}
	pgExec(t, dbc, `CREATE SCHEMA other`)
	pgExec(t, dbc, `GRANT USAGE ON SCHEMA other TO "app user"`)
	before := len(grants())
	w := h.do(in, "POST", "/grants", `{"database":"appdb","schema":"other","privileges":["USAGE","CREATE","USAGE"],"role":"app user"}`, jsonBody())
	expect(t, w, 201, "")
	if g := grants()[before:]; len(g) != 1 || g[0] != `GRANT CREATE ON SCHEMA "other" TO "app user"` {
		t.Fatalf("GRANT statements %q, want only the missing CREATE", g)
	}

	// An empty list grants nothing.
	expect(t, h.do(in, "POST", "/grants", `{"database":"appdb","schema":"public","privileges":[],"role":"app user"}`, jsonBody()), 201, "")

	for _, tc := range []struct {
		name, body string
		status     int
		contains   string
	}{
		{"unknown privilege", `{"database":"appdb","schema":"my schema","privileges":["DROP"],"role":"app user"}`, 422, "unknown variant"},
		{"lower case", `{"database":"appdb","schema":"my schema","privileges":["usage"],"role":"app user"}`, 422, "unknown variant"},
		// CREATE on pg_catalog would let the role plant objects superuser sessions find.
		{"pg_catalog", `{"database":"appdb","schema":"pg_catalog","privileges":["CREATE"],"role":"app user"}`, 422, "system schema"},
		{"information_schema", `{"database":"appdb","schema":"information_schema","privileges":["USAGE"],"role":"app user"}`, 422, "system schema"},
		{"pg_toast", `{"database":"appdb","schema":"pg_toast","privileges":["USAGE"],"role":"app user"}`, 422, "system schema"},
		{"injection", `{"database":"appdb","schema":"my schema","privileges":["USAGE ON SCHEMA public TO PUBLIC; --"],"role":"app user"}`, 422, "unknown variant"},
		{"privilege not a string", `{"database":"appdb","schema":"my schema","privileges":[1],"role":"app user"}`, 422, "invalid type"},
		{"no such role", `{"database":"appdb","schema":"my schema","privileges":["USAGE"],"role":"nobody"}`, 500, `role "nobody" does not exist`},
		{"no such schema", `{"database":"appdb","schema":"nope","privileges":["USAGE"],"role":"app user"}`, 500, `schema "nope" does not exist`},
		{"no such database", `{"database":"nope","schema":"public","privileges":["USAGE"],"role":"app user"}`, 500, "connect to postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do(in, "POST", "/grants", tc.body, jsonBody())
			expect(t, w, tc.status, "")
			msg := errorBody(t, w)
			if !strings.Contains(msg, tc.contains) {
				t.Fatalf("error %q, want it to say %q", msg, tc.contains)
			}
			if tc.status == 500 && !strings.HasPrefix(msg, "failed to grant role privileges to the schema: ") {
				t.Fatalf("error %q without compute_ctl's prefix", msg)
			}
		})
	}
	if pgQuery[bool](t, dbc, `SELECT has_schema_privilege('public', 'public', 'CREATE')`) {
		t.Fatal("PUBLIC got CREATE on public")
	}
	badBodies(t, h, "/grants", body, "privileges")
}
