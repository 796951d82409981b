package pg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// instance is the package's shared server; it logs every statement so that the quiet
// session test can prove its SETs matter.
func instance(t *testing.T) *pgtest.Instance {
	return pgtest.Shared(t, pgtest.WithSetting("log_statement", "all"))
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name, connstr, app string
		wantOptions        string
	}{
		{"no options", "postgresql://cloud_admin@/postgres?host=/tmp", "compute_ctl:apply_config", StartupOptions},
		{"connstr options come last", "postgresql://cloud_admin@/postgres?host=/tmp&options=-c%20statement_timeout%3D5s", "x",
			StartupOptions + " -c statement_timeout=5s"},
		{"key=value form", "host=/tmp user=cloud_admin dbname=postgres options='-c work_mem=1MB'", "y",
			StartupOptions + " -c work_mem=1MB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(tc.connstr, tc.app)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.RuntimeParams["options"]; got != tc.wantOptions {
				t.Errorf("options = %q, want %q", got, tc.wantOptions)
			}
			if got := cfg.RuntimeParams["application_name"]; got != tc.app {
				t.Errorf("application_name = %q, want %q", got, tc.app)
			}
		})
	}
}

func TestConfigErrorHidesPassword(t *testing.T) {
	for _, cs := range []string{
		"postgresql://u:s3cr3t-pw@host:notaport/db",
		"host=x password=s3cr3t-pw port=notaport",
		"postgresql://u:s3cr3t-pw@[::1/db",
	} {
		_, err := Config(cs, "x")
		if err == nil {
			t.Fatalf("Config(%q) succeeded, want an error", cs)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
}

func TestIdent(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{"MyRole", `"MyRole"`},
		{`zenith "new"`, `"zenith ""new"""`},
		{"\"name\";\n select 1;", "\"\"\"name\"\";\n select 1;\""},
		{"select", `"select"`},
	}
	for _, tc := range tests {
		if got := Ident(tc.in); got != tc.want {
			t.Errorf("Ident(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestLiteral(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"abc", "'abc'", nil},
		{"it's", "'it''s'", nil},
		{`back\slash`, `'back\slash'`, nil},
		{"", "''", nil},
		{"a\x00b", "", ErrNUL},
	}
	for _, tc := range tests {
		got, err := Literal(tc.in)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("Literal(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), tc.in) {
			t.Errorf("Literal error quotes its input: %v", err)
		}
	}
}

// TestQuotingRoundTrip sends quoted text to a real server and reads it back.
func TestQuotingRoundTrip(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	conn, err := Connect(ctx, inst.Connstr(), "pg-test")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{
		"plain", "it's", `back\slash`, `zenith "new"`, "\"name\";\n select 1;", "MyRole",
		"ünïcødé 名前", "with space", "select", "'; DROP TABLE x; --", `\'`, "$$", strings.Repeat("x", 63),
	} {
		lit, err := Literal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if err := conn.QueryRow(ctx, "SELECT "+lit).Scan(&got); err != nil {
			t.Fatalf("SELECT %s: %v", lit, err)
		}
		if got != s {
			t.Errorf("literal round trip: got %q, want %q", got, s)
		}
		rows, err := conn.Query(ctx, "SELECT 1 AS "+Ident(s))
		if err != nil {
			t.Fatalf("SELECT 1 AS %s: %v", Ident(s), err)
		}
		name := string(rows.FieldDescriptions()[0].Name)
		rows.Close()
		if name != s {
			t.Errorf("identifier round trip: got %q, want %q", name, s)
		}
	}
}

func TestConnectStartupOptions(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	// The connstr's own options come after ours and win; standard_conforming_strings=off
	// from the connstr is turned back on by Connect.
	cs := inst.Connstr() + "&options=" + strings.ReplaceAll(url.QueryEscape("-c statement_timeout=7s -c standard_conforming_strings=off"), "+", "%20")
	conn, err := Connect(ctx, cs, "compute_ctl:test")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	want := map[string]string{
		"application_name":              "compute_ctl:test",
		"search_path":                   "public",
		"default_transaction_read_only": "off",
		"statement_timeout":             "7s",
		"pgaudit.log":                   "none",
		"standard_conforming_strings":   "on",
	}
	for name, w := range want {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatalf("current_setting(%s): %v", name, err)
		}
		if got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
}

func TestConnectDefaultsWithoutConnstrOptions(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	conn, err := Connect(ctx, inst.Connstr(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var st string
	if err := conn.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&st); err != nil {
		t.Fatal(err)
	}
	if st != "0" {
		t.Errorf("statement_timeout = %q, want 0", st)
	}
}

func TestConnectError(t *testing.T) {
	inst := instance(t)
	_, err := Connect(context.Background(), inst.Connstr()+"&user=no_such_role", "x")
	if err == nil {
		t.Fatal("connecting as a missing role succeeded")
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
		t.Fatalf("err = %v, want SQLSTATE 28000 in the chain", err)
	}
}

func randomMarker(t *testing.T, prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// TestQuietSessionKeepsPasswordsOutOfTheLog runs password DDL, failing and succeeding,
// on a server that logs every statement, and checks the server log.
func TestQuietSessionKeepsPasswordsOutOfTheLog(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	loud, err := Connect(ctx, inst.Connstr(), "loud")
	if err != nil {
		t.Fatal(err)
	}
	defer loud.Close(ctx)
	quiet, err := Connect(ctx, inst.Connstr(), "quiet")
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close(ctx)

	if _, err := loud.Exec(ctx, `CREATE ROLE quiet_dup`); err != nil {
		t.Fatal(err)
	}
	if err := QuietSession(ctx, quiet); err != nil {
		t.Fatalf("QuietSession: %v", err)
	}
	failMarker := randomMarker(t, "fail-marker-")
	okMarker := randomMarker(t, "ok-marker-")
	alterMarker := randomMarker(t, "alter-marker-")
	loudMarker := randomMarker(t, "loud-marker-")

	var pgErr *pgconn.PgError
	_, err = quiet.Exec(ctx, "CREATE ROLE quiet_dup LOGIN PASSWORD '"+failMarker+"'")
	if !errors.As(err, &pgErr) || pgErr.Code != "42710" {
		t.Fatalf("duplicate CREATE ROLE: err = %v, want SQLSTATE 42710", err)
	}
	if _, err := quiet.Exec(ctx, "CREATE ROLE quiet_ok LOGIN PASSWORD '"+okMarker+"'"); err != nil {
		t.Fatal(err)
	}
	if _, err := quiet.Exec(ctx, "ALTER ROLE quiet_ok PASSWORD '"+alterMarker+"'"); err != nil {
		t.Fatal(err)
	}
	// The control: the same failing statement on a session that is not quiet is logged,
	// which proves that the server logs statements and that the SETs are what hides them.
	_, err = loud.Exec(ctx, "CREATE ROLE quiet_dup LOGIN PASSWORD '"+loudMarker+"'")
	if !errors.As(err, &pgErr) || pgErr.Code != "42710" {
		t.Fatalf("duplicate CREATE ROLE on the loud session: err = %v, want SQLSTATE 42710", err)
	}
	log := waitForLog(t, inst, loudMarker)
	for _, m := range []string{failMarker, okMarker, alterMarker} {
		if strings.Contains(log, m) {
			t.Errorf("server log contains the password %s from the quiet session:\n%s", m, log)
		}
	}
	// The quiet session's error itself is still logged (without the statement).
	if !strings.Contains(log, `role "quiet_dup" already exists`) {
		t.Errorf("server log lacks the error message of the quiet session")
	}

	// Settings really are in effect for the session.
	var ls, lmes, ta string
	if err := quiet.QueryRow(ctx, "SELECT current_setting('log_statement'), current_setting('log_min_error_statement'), current_setting('track_activities')").Scan(&ls, &lmes, &ta); err != nil {
		t.Fatal(err)
	}
	if ls != "none" || lmes != "panic" || ta != "off" {
		t.Errorf("log_statement=%s log_min_error_statement=%s track_activities=%s, want none, panic, off", ls, lmes, ta)
	}
}

func waitForLog(t *testing.T, inst *pgtest.Instance, marker string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := inst.ReadLog(t)
		if strings.Contains(log, marker) {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("marker %s never reached the server log:\n%s", marker, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestQuietSessionNeedsSuperuser(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	admin, err := Connect(ctx, inst.Connstr(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE ROLE quiet_plain LOGIN"); err != nil {
		t.Fatal(err)
	}
	plain, err := Connect(ctx, inst.Connstr()+"&user=quiet_plain", "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	if err := QuietSession(ctx, plain); err == nil {
		t.Fatal("QuietSession succeeded for a non-superuser, whose statements would still be logged")
	}
}

// TestConnectApplyForwardDDLOff: the spec's DDL sessions run with neon.forward_ddl off, as
// compute_ctl's maintenance sessions. On vanilla PostgreSQL 15 (no neon library) the
// setting is an accepted placeholder; the other sessions do not carry it.
func TestConnectApplyForwardDDLOff(t *testing.T) {
	inst := instance(t)
	ctx := context.Background()
	conn, err := ConnectApply(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for name, want := range map[string]string{"neon.forward_ddl": "false", "application_name": ApplyAppName, "search_path": "public"} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatalf("current_setting(%s): %v", name, err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// A SET, as compute_ctl sends it, is accepted too on vanilla PostgreSQL 15.
	if _, err := conn.Exec(ctx, "SET neon.forward_ddl = false"); err != nil {
		t.Errorf("SET neon.forward_ddl on PostgreSQL 15: %v", err)
	}

	other, err := Connect(ctx, inst.Connstr(), "compute_ctl:monitor")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	var v *string
	if err := other.QueryRow(ctx, "SELECT current_setting('neon.forward_ddl', true)").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != nil && *v != "" {
		t.Errorf("a session that runs no spec DDL has neon.forward_ddl = %q", *v)
	}
}
