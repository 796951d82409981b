package compute

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// writeAuth installs the compute's pg_hba.conf and pg_ident.conf for a (pgdata.WriteAuth)
// in inst, restarting it.
func writeAuth(t *testing.T, inst *pgtest.Instance, a pgdata.Auth) {
	t.Helper()
	inst.Halt(t)
	if err := (pgdata.Dir{Path: inst.DataDir, NoSync: true}).WriteAuth(a); err != nil {
		t.Fatal(err)
	}
	uid, gid := pgtest.OSUserIDs(t)
	for _, f := range []string{pgdata.HBAFile, pgdata.IdentFile} {
		if err := os.Chown(filepath.Join(inst.DataDir, f), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	inst.Resume(t)
}

// legacyRoles reports, as the bootstrap superuser su, whether cloud_admin exists, is a
// superuser and is a member of zenith_admin.
func legacyRoles(t *testing.T, inst *pgtest.Instance, su string) (exists, super, member bool) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = su
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	err = c.QueryRow(ctx, `SELECT true, rolsuper, pg_catalog.pg_has_role('cloud_admin', 'zenith_admin', 'MEMBER')
		FROM pg_catalog.pg_roles WHERE rolname = 'cloud_admin'`).Scan(&exists, &super, &member)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return exists, super, member
}

// An old timeline: the cluster's superuser is zenith_admin and there is no cloud_admin.
// The neon-mode connection creates cloud_admin through zenith_admin and logs in as it.
//
// With our pg_hba.conf and pg_ident.conf (peer through the ident map; this test runs as
// root, one of its OS users): without zenith_admin on the admin's line (as in standalone
// mode) the fallback cannot log in; with it (FinishNeon's auth in neon mode) it can.
func TestConnectAdminLegacyCreatesAdmin(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSuperuser(paths.LegacyAdminRole))
	ctx := context.Background()
	writeAuth(t, inst, pgdata.Auth{AdminRole: "cloud_admin", OSUsers: paths.AdminOSUsers()})
	_, err := connectRetry(ctx, inst.Connstr(), true, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "zenith_admin fallback") || !strings.Contains(err.Error(), `user "zenith_admin"`) {
		t.Fatalf("without zenith_admin in pg_hba.conf: %v; want the fallback refused", err)
	}
	writeAuth(t, inst, pgdata.Auth{AdminRole: "cloud_admin", OSUsers: paths.AdminOSUsers(), LegacyRoles: []string{paths.LegacyAdminRole}})
	logs := &syncLog{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	conn, err := connectRetry(ctx, inst.Connstr(), true, log)
	if err != nil {
		t.Fatal(err)
	}
	var user, ddl string
	if err := conn.QueryRow(ctx, "SELECT session_user, current_setting('neon.forward_ddl', true)").Scan(&user, &ddl); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if user != "cloud_admin" || ddl != "false" {
		t.Errorf("session_user %q, neon.forward_ddl %q; want cloud_admin, false", user, ddl)
	}
	if exists, super, member := legacyRoles(t, inst, paths.LegacyAdminRole); !exists || !super || !member {
		t.Errorf("cloud_admin exists %v, superuser %v, member of zenith_admin %v; want all true", exists, super, member)
	}
	if out := logs.String(); !strings.Contains(out, `role \"cloud_admin\" does not exist (SQLSTATE 28000)`) ||
		!strings.Contains(out, "admin role created by zenith_admin") {
		t.Errorf("log:\n%s", out)
	}
	// The next start logs in directly: no second fallback (CREATE USER would fail).
	logs2 := &syncLog{}
	conn, err = connectRetry(ctx, inst.Connstr(), true, slog.New(slog.NewTextHandler(logs2, nil)))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if strings.Contains(logs2.String(), "zenith_admin") {
		t.Errorf("fallback taken again:\n%s", logs2.String())
	}
}

// Standalone mode has no old timelines: the refused login is the error, nothing is created.
func TestConnectAdminStandaloneNoFallback(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSuperuser(paths.LegacyAdminRole))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := connectAdmin(ctx, inst.Connstr(), false, slog.New(slog.DiscardHandler))
	if err == nil || !isAuthFailure(err) || strings.Contains(err.Error(), "zenith_admin") {
		t.Fatalf("err %v, want the refused login alone", err)
	}
	if exists, _, _ := legacyRoles(t, inst, paths.LegacyAdminRole); exists {
		t.Error("cloud_admin created in standalone mode")
	}
}

// Neither cloud_admin nor zenith_admin: the error names both refusals and is final (not
// retried as a socket that is not there yet would be).
func TestConnectAdminLegacyFallbackFails(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSuperuser("someone_else"))
	_, err := connectRetry(context.Background(), inst.Connstr(), true, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("connected")
	}
	msg := err.Error()
	if !strings.Contains(msg, `role "cloud_admin" does not exist`) || !strings.Contains(msg, `role "zenith_admin" does not exist`) ||
		!strings.Contains(msg, "zenith_admin fallback") {
		t.Errorf("error %q does not name both refusals", msg)
	}
	if errors.As(err, new(*retry.Error)) {
		t.Errorf("the failed fallback was retried: %v", err)
	}
}

// cloud_admin exists but cannot log in (here: pg_hba rejects it): the fallback's CREATE
// USER fails, as compute_ctl's does, and the error says so; nothing changes.
func TestConnectAdminLegacyAdminExists(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSuperuser(paths.LegacyAdminRole))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, strings.Replace(inst.Connstr(), "cloud_admin@", "zenith_admin@", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE ROLE cloud_admin LOGIN"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	inst.WriteHBA(t, "local all cloud_admin reject\nlocal all all trust\n")
	deadline := time.Now().Add(10 * time.Second)
	var cerr error
	for time.Now().Before(deadline) {
		if _, cerr = connectAdmin(ctx, inst.Connstr(), true, slog.New(slog.DiscardHandler)); cerr != nil && strings.Contains(cerr.Error(), "fallback") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), `role "cloud_admin" already exists`) {
		t.Fatalf("err %v, want CREATE USER refused", cerr)
	}
	if _, super, _ := legacyRoles(t, inst, paths.LegacyAdminRole); super {
		t.Error("cloud_admin became a superuser")
	}
}

// A neon-mode first start on an old timeline: configure creates cloud_admin and goes on
// to apply the spec as cloud_admin. Vanilla PostgreSQL has no neon extension, which neon
// mode requires, so the apply then stops there: past the login, with cloud_admin in place.
func TestFirstConfigureNeonLegacyTimeline(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSuperuser(paths.LegacyAdminRole))
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncLog{}
	deps := &Deps{Store: st, Log: slog.New(slog.NewTextHandler(logs, nil))}
	cfg := Settings{StateDir: st.Dir(), PGData: inst.DataDir, Connstr: inst.Connstr(), PrivilegedRole: "neon_superuser"}
	body := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
	  "tenant_id": "` + testTenant + `", "timeline_id": "` + testTimeline + `",
	  "pageserver_connstring": "postgresql://no-pageserver.invalid:6400", "safekeeper_connstrings": ["no-safekeeper.invalid:5454"],
	  "cluster": {"roles": [{"name": "alice", "encrypted_password": null, "options": null}], "databases": []}}}`
	if err := os.WriteFile(paths.AppliedConfigFile(st.Dir()), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	done := time.Now().Add(-time.Minute)
	if _, err := statetest.Set(st, state.Init, func(rec *state.Record) { rec.PrepareDoneAt = &done }); err != nil {
		t.Fatal(err)
	}
	err = Configure(context.Background(), cfg, deps)
	if err == nil || !strings.Contains(err.Error(), "extension neon is not available") {
		t.Fatalf("configure: %v; want it past the login, stopped at the neon extension", err)
	}
	if exists, super, member := legacyRoles(t, inst, paths.LegacyAdminRole); !exists || !super || !member {
		t.Errorf("cloud_admin exists %v, superuser %v, member of zenith_admin %v; want all true", exists, super, member)
	}
	if !strings.Contains(logs.String(), "admin role created by zenith_admin") {
		t.Errorf("log:\n%s", logs.String())
	}
}
