package apply

import (
	"context"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
)

// TestApplyKeepsPasswordsOutOfStatistics applies a spec with md5 and SCRAM passwords (new
// roles, then changed passwords) on a server with pg_stat_statements loaded, and checks
// that a role with nothing but pg_monitor finds no hash in pg_stat_statements or
// pg_stat_activity, while the applying session is still open (pg_stat_activity shows an
// idle backend's last statement). A control statement with a marker, run outside the
// apply, must be visible, so the views really do keep utility statements.
func TestApplyKeepsPasswordsOutOfStatistics(t *testing.T) {
	inst := pgtest.Start(t,
		pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"),
		pgtest.WithSetting("pg_stat_statements.track_utility", "on"),
		pgtest.WithSetting("pg_stat_statements.track", "all"))
	ctx := context.Background()
	admin := connect(t, inst.Connstr())
	for _, q := range []string{
		"CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
		"CREATE ROLE stats_watcher LOGIN IN ROLE pg_monitor",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	md5First, md5Second := randomHex(t, 16), randomHex(t, 16)
	scramFirst, scramSecond := scramVerifier(t, "first-"+randomHex(t, 8)), scramVerifier(t, "second-"+randomHex(t, 8))
	secrets := map[string]string{
		"md5 (create)": md5First, "md5 (alter)": md5Second,
		"SCRAM (create)": scramFirst, "SCRAM (alter)": scramSecond,
	}
	applyConn := connect(t, inst.Connstr())
	for _, pw := range [][2]string{{md5First, scramFirst}, {md5Second, scramSecond}} {
		s := specOf([]spec.Role{
			{Name: "stats_md5", EncryptedPassword: ptr(pw[0])},
			{Name: "stats_scram", EncryptedPassword: ptr(pw[1])},
		}, nil)
		if _, err := Apply(ctx, applyConn, s, Options{}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	if r, ok := readRole(t, admin, "stats_scram"); !ok || r.password == nil || *r.password != scramSecond {
		t.Fatalf("the apply did not set the second SCRAM verifier")
	}

	// The control, on a session that is not quiet.
	marker := "control-" + randomHex(t, 8)
	if _, err := connect(t, inst.Connstr()).Exec(ctx, "CREATE ROLE stats_control PASSWORD '"+marker+"'"); err != nil {
		t.Fatal(err)
	}

	watcher := connect(t, inst.Connstr()+"&user=stats_watcher")
	read := func(q string) string {
		t.Helper()
		rows, err := watcher.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var all strings.Builder
		for rows.Next() {
			var s *string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			if s != nil {
				all.WriteString(*s + "\n")
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return all.String()
	}
	statements := read("SELECT query FROM pg_stat_statements")
	if !strings.Contains(statements, marker) {
		t.Fatalf("pg_stat_statements lacks the control statement (does the watcher see it at all?):\n%s", statements)
	}
	activity := read("SELECT query FROM pg_stat_activity")
	for what, sec := range secrets {
		if strings.Contains(statements, sec) {
			t.Errorf("pg_stat_statements, read by a pg_monitor role, holds the %s password hash", what)
		}
		if strings.Contains(activity, sec) {
			t.Errorf("pg_stat_activity, read by a pg_monitor role, holds the %s password hash", what)
		}
	}
	if t.Failed() {
		t.Logf("pg_stat_statements:\n%s\npg_stat_activity:\n%s", statements, activity)
	}
}

// TestApplyRefusesTheAdminRoleAsSpecRole: a spec role named like the admin role (the
// connection's superuser) would get the spec's password, and with it a superuser login
// over TCP. The spec is refused with a clear error and nothing of it is applied.
func TestApplyRefusesTheAdminRoleAsSpecRole(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	if _, err := conn.Exec(ctx, "CREATE ROLE other_super SUPERUSER"); err != nil {
		t.Fatal(err)
	}
	for _, admin := range []string{pgtest.AdminUser, "other_super"} {
		s := specOf([]spec.Role{
			{Name: "admin_clash_ok", EncryptedPassword: ptr(md5Hash("pw", "admin_clash_ok"))},
			{Name: admin, EncryptedPassword: ptr(md5Hash("pw", admin))},
		}, nil)
		_, err := Apply(ctx, conn, s, Options{})
		if err == nil || !strings.Contains(err.Error(), `role "`+admin+`": is the admin role (a superuser) and cannot be a spec role`) {
			t.Errorf("spec role %s: %v", admin, err)
		}
		if r, ok := readRole(t, conn, admin); !ok || r.password != nil {
			t.Errorf("%s got a password", admin)
		}
		if _, ok := readRole(t, conn, "admin_clash_ok"); ok {
			t.Errorf("spec role %s: the rest of the spec was applied", admin)
		}
	}
}
