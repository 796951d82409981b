package computeclient_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/pkg/computeclient"
)

// What each method sends, byte for byte, and how it reads answers shaped as Neon's
// OpenAPI document and the reference's code give them, against a recording server. The
// routes compute-tools serves are also round-trip tested against the real handlers
// (roundtrip_test.go, postgres_test.go); /failpoints, which it does not serve, only here.
func TestPendingRoutesRequests(t *testing.T) {
	type seen struct{ method, path, query, ctype, auth, body string }
	var got seen
	answer := map[string]struct {
		code int
		ct   string
		body string
	}{
		"/check_writability": {200, "application/json", `true`},
		"/insights":          {200, "application/json", `{"pg_stat_statements":[{"query":"select 1","calls":3}]}`},
		"/dbs_and_roles": {200, "application/json", `{"roles":[{"name":"neon","encrypted_password":null,"options":null}],` +
			`"databases":[{"name":"neondb","owner":"neon","options":null,"restrict_conn":false,"invalid":true}]}`},
		"/database_schema": {200, "application/json", "CREATE TABLE t ();\n"},
		"/promote":         {200, "application/json", `{"status":"completed"}`},
		"/extensions":      {201, "application/json", `{"extension":"pg_session_jwt","version":"1.0.0"}`},
		"/failpoints":      {200, "", ""},
		"/grants":          {201, "application/json", `{"database":"neondb","schema":"public","privileges":["SELECT","INSERT"],"role":"neon"}`},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(b)}
		a, ok := answer[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", a.ct)
		w.WriteHeader(a.code)
		_, _ = io.WriteString(w, a.body)
	}))
	defer srv.Close()
	ctx := context.Background()
	c, err := computeclient.New(srv.URL, computeclient.StaticToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := computeclient.NewInternal(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	check := func(want seen) {
		t.Helper()
		if got != want {
			t.Fatalf("request\n got %+v\nwant %+v", got, want)
		}
	}

	if err := c.CheckWritability(ctx); err != nil {
		t.Fatal(err)
	}
	check(seen{"POST", "/check_writability", "", "", "Bearer tok", ""})

	ins, err := c.Insights(ctx)
	if err != nil || len(ins.PgStatStatements) != 1 || !strings.Contains(string(ins.PgStatStatements[0]), `"calls":3`) {
		t.Fatalf("insights %+v %v", ins, err)
	}
	check(seen{"GET", "/insights", "", "", "Bearer tok", ""})

	dr, err := c.DbsAndRoles(ctx)
	if err != nil || len(dr.Roles) != 1 || dr.Roles[0].Name != "neon" || len(dr.Databases) != 1 || !dr.Databases[0].Invalid || dr.Databases[0].Owner != "neon" {
		t.Fatalf("dbs_and_roles %+v %v", dr, err)
	}
	check(seen{"GET", "/dbs_and_roles", "", "", "Bearer tok", ""})

	rc, err := c.DatabaseSchema(ctx, "my db&x")
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := io.ReadAll(rc)
	rc.Close()
	if string(dump) != "CREATE TABLE t ();\n" {
		t.Fatalf("dump %q", dump)
	}
	check(seen{"GET", "/database_schema", "database=my+db%26x", "", "Bearer tok", ""})

	ps, err := c.Promote(ctx, computeclient.PromoteRequest{Safekeepers: "sk1:5454,sk2:5454", WALFlushLSN: mustLsn(t, "0/16B5A50")})
	if err != nil || ps.Status != "completed" {
		t.Fatalf("promote %+v %v", ps, err)
	}
	check(seen{"POST", "/promote", "", "application/json", "Bearer tok", `{"safekeepers":"sk1:5454,sk2:5454","wal_flush_lsn":"0/16B5A50"}`})

	ext, err := in.InstallExtension(ctx, computeclient.ExtensionInstallRequest{Extension: "pg_session_jwt", Database: "neondb", Version: "1.0.0"})
	if err != nil || ext.Version != "1.0.0" {
		t.Fatalf("extensions %+v %v", ext, err)
	}
	check(seen{"POST", "/extensions", "", "application/json", "", `{"extension":"pg_session_jwt","database":"neondb","version":"1.0.0"}`})

	gr, err := in.SetRoleGrants(ctx, computeclient.SetRoleGrantsRequest{Database: "neondb", Schema: "public", Privileges: []computeclient.Privilege{computeclient.PrivilegeSelect, computeclient.PrivilegeInsert}, Role: "neon"})
	if err != nil || gr.Role != "neon" || len(gr.Privileges) != 2 {
		t.Fatalf("grants %+v %v", gr, err)
	}
	check(seen{"POST", "/grants", "", "application/json", "", `{"database":"neondb","schema":"public","privileges":["SELECT","INSERT"],"role":"neon"}`})

	if err := in.ConfigureFailpoints(ctx, []computeclient.FailpointConfig{{Name: "compute-migration", Actions: "return(3)"}}); err != nil {
		t.Fatal(err)
	}
	check(seen{"POST", "/failpoints", "", "application/json", "", `[{"name":"compute-migration","actions":"return(3)"}]`})

	// A route the server does not have: an *Error with 404 and the text body.
	err = in.DownloadExtension(ctx, "a b/c.so", false)
	if computeclient.StatusCode(err) != 404 || !strings.Contains(err.Error(), "404 page not found") {
		t.Fatalf("download: %v", err)
	}
	check(seen{"POST", "/extension_server/a b/c.so", "", "", "", ""})
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "localhost:3080", "ftp://x", "http://", "::"} {
		if _, err := computeclient.New(u, nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func mustLsn(t *testing.T, s string) computeclient.Lsn {
	t.Helper()
	l, err := computeclient.ParseLsn(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
