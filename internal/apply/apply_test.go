package apply

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// shared is the package's shared server; it logs every statement so that the tests can
// check that passwords stay out of the log.
func shared(t *testing.T) *pgtest.Instance {
	return pgtest.Shared(t, pgtest.WithSetting("log_statement", "all"))
}

func connect(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, connstr, "compute_ctl:apply_config")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// md5Hash is the md5 hash Postgres stores for password (without the "md5" prefix).
func md5Hash(password, role string) string {
	sum := md5.Sum([]byte(password + role))
	return hex.EncodeToString(sum[:])
}

// scramVerifier computes a SCRAM-SHA-256 verifier as Postgres stores it (RFC 5802/7677).
func scramVerifier(t *testing.T, password string) string {
	t.Helper()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	const iter = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(msg string) []byte {
		h := hmac.New(sha256.New, salted)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(mac("Server Key")))
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func planFor(t *testing.T, conn *pgx.Conn, s *spec.ComputeSpec) []Action {
	t.Helper()
	cat, err := ReadCatalog(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	actions, err := Plan(s, cat, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return actions
}

type roleRow struct {
	password                                                   *string
	login, inherit, createrole, createdb, bypassrls, repl, sup bool
	member                                                     bool
}

func readRole(t *testing.T, conn *pgx.Conn, name string) (roleRow, bool) {
	t.Helper()
	var r roleRow
	err := conn.QueryRow(context.Background(), `SELECT rolpassword, rolcanlogin, rolinherit, rolcreaterole, rolcreatedb,
		rolbypassrls, rolreplication, rolsuper, pg_has_role(rolname, 'neon_superuser', 'MEMBER')
		FROM pg_authid WHERE rolname = $1`, name).
		Scan(&r.password, &r.login, &r.inherit, &r.createrole, &r.createdb, &r.bypassrls, &r.repl, &r.sup, &r.member)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false
	}
	if err != nil {
		t.Fatalf("read role %q: %v", name, err)
	}
	return r, true
}

func dbOwner(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var owner string
	if err := conn.QueryRow(context.Background(),
		`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, name).Scan(&owner); err != nil {
		t.Fatalf("owner of database %q: %v", name, err)
	}
	return owner
}

// TestApplyNeonLikeSpec applies a spec like Neon's fixture to a fresh PostgreSQL 15 and
// checks the catalog, logins with the spec passwords, idempotence and changes.
func TestApplyNeonLikeSpec(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())

	const (
		md5Role   = "postgres"
		scramRole = `zenith "new"`
		nullRole  = "MyRole"
		evilRole  = "\"name\";\n select 1;"
		uniRole   = "ünïcødé rôle"
		md5Pass   = "md5-pass'word"
		scramPass = "scram pass\"word"
		evilPass  = "evil-pass"
	)
	scram := scramVerifier(t, scramPass)
	s := specOf(
		[]spec.Role{
			{Name: md5Role, EncryptedPassword: ptr(md5Hash(md5Pass, md5Role))},
			{Name: scramRole, EncryptedPassword: ptr(scram)},
			{Name: nullRole},
			{Name: evilRole, EncryptedPassword: ptr(md5Hash(evilPass, evilRole))},
			{Name: uniRole, EncryptedPassword: ptr(md5Hash("x", uniRole))},
		},
		[]spec.Database{
			{Name: "DB2", Owner: nullRole, Options: spec.GenericOptions{
				opt("LC_COLLATE", "C", "string"), opt("LC_CTYPE", "C", "string"), opt("TEMPLATE", "template0", "enum")}},
			{Name: "zenith", Owner: scramRole},
			{Name: evilRole, Owner: evilRole},
			{Name: "admin's db", Owner: "cloud_admin"},
		})

	res, err := Apply(ctx, conn, s, Options{})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// Four spec databases get per-database work, each the two default-privilege grants;
	// the system database has nothing that could be done (no role to delete).
	want := map[string]int{PhaseCreatePrivilegedRole: 1, PhaseCreateAndAlterRoles: 5, PhaseCreateAndAlterDatabases: 8,
		PhaseCreateSchemaNeon: 1, PhaseChangeSchemaPerms: 8, PhaseCreateAvailabilityCheck: 1}
	if fmt.Sprint(res.PerPhase) != fmt.Sprint(want) || res.Total != 24 || res.Databases != 4 || res.DBsIdle != 1 {
		t.Fatalf("Result %+v, want %v (24, 4 databases, 1 idle)", res, want)
	}

	// The privileged role.
	var privLogin, privCreatedb, privCreaterole, privRepl, privBypass, readAll, writeAll bool
	if err := conn.QueryRow(ctx, `SELECT rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
		pg_has_role('neon_superuser', 'pg_read_all_data', 'MEMBER'), pg_has_role('neon_superuser', 'pg_write_all_data', 'MEMBER')
		FROM pg_roles WHERE rolname = 'neon_superuser'`).
		Scan(&privLogin, &privCreatedb, &privCreaterole, &privRepl, &privBypass, &readAll, &writeAll); err != nil {
		t.Fatalf("neon_superuser: %v", err)
	}
	if privLogin || !privCreatedb || !privCreaterole || !privRepl || !privBypass || !readAll || !writeAll {
		t.Errorf("neon_superuser attributes wrong: login=%v createdb=%v createrole=%v repl=%v bypassrls=%v read_all=%v write_all=%v",
			privLogin, privCreatedb, privCreaterole, privRepl, privBypass, readAll, writeAll)
	}

	// Spec roles.
	wantPw := map[string]*string{
		md5Role:   ptr("md5" + md5Hash(md5Pass, md5Role)),
		scramRole: ptr(scram),
		nullRole:  nil,
		evilRole:  ptr("md5" + md5Hash(evilPass, evilRole)),
		uniRole:   ptr("md5" + md5Hash("x", uniRole)),
	}
	for name, pw := range wantPw {
		r, ok := readRole(t, conn, name)
		if !ok {
			t.Errorf("role %q was not created", name)
			continue
		}
		if !samePassword(r.password, pw) {
			t.Errorf("role %q: stored password %v, want %v", name, deref(r.password), deref(pw))
		}
		if !r.login || !r.inherit || !r.createrole || !r.createdb || !r.bypassrls || !r.repl || r.sup || !r.member {
			t.Errorf("role %q: attributes %+v", name, r)
		}
	}

	// Databases, owners, options and the grant to the privileged role.
	for db, owner := range map[string]string{"DB2": nullRole, "zenith": scramRole, evilRole: evilRole, "admin's db": "cloud_admin"} {
		if got := dbOwner(t, conn, db); got != owner {
			t.Errorf("database %q owner %q, want %q", db, got, owner)
		}
		var granted bool
		if err := conn.QueryRow(ctx, `SELECT has_database_privilege('neon_superuser', $1, 'CREATE, CONNECT, TEMPORARY')`, db).Scan(&granted); err != nil {
			t.Fatal(err)
		}
		if !granted {
			t.Errorf("neon_superuser lacks privileges on database %q", db)
		}
	}
	var collate, ctype string
	if err := conn.QueryRow(ctx, `SELECT datcollate, datctype FROM pg_database WHERE datname = 'DB2'`).Scan(&collate, &ctype); err != nil {
		t.Fatal(err)
	}
	if collate != "C" || ctype != "C" {
		t.Errorf("DB2 collate/ctype = %s/%s, want C/C", collate, ctype)
	}

	// Logins with the spec passwords over TCP, md5 checked by the server.
	inst.WriteHBA(t, "local all all trust\nhost all all 127.0.0.1/32 md5\n")
	waitForPasswordAuth(t, inst)
	checkLogin(t, inst, md5Role, md5Pass, true)
	checkLogin(t, inst, scramRole, scramPass, true)
	checkLogin(t, inst, evilRole, evilPass, true)
	checkLogin(t, inst, md5Role, "wrong", false)
	checkLogin(t, inst, scramRole, "wrong", false)

	// Re-applying the same spec plans nothing (md5 roles are not re-altered).
	if a := planFor(t, conn, s); len(a) != 0 {
		t.Fatalf("re-apply plans %d actions:\n%s", len(a), dumpSQL(a))
	}
	if res, err := Apply(ctx, conn, s, Options{}); err != nil || res.Total != 0 {
		t.Fatalf("re-apply: %+v, %v", res, err)
	}

	// A password change is one ALTER ROLE, and the new password works.
	s.Cluster.Roles[0].EncryptedPassword = ptr(md5Hash("new-pass", md5Role))
	a := planFor(t, conn, s)
	if len(a) != 1 || !strings.HasPrefix(a[0].SQL, `ALTER ROLE "postgres" LOGIN PASSWORD 'md5`) || !a[0].Secret {
		t.Fatalf("password change plans:\n%s", dumpSQL(a))
	}
	if err := Execute(ctx, conn, a, nil); err != nil {
		t.Fatal(err)
	}
	checkLogin(t, inst, md5Role, "new-pass", true)
	checkLogin(t, inst, md5Role, md5Pass, false)

	// An owner change is one ALTER DATABASE.
	s.Cluster.Databases[1].Owner = nullRole
	a = planFor(t, conn, s)
	if len(a) != 1 || a[0].SQL != `ALTER DATABASE "zenith" OWNER TO "MyRole"` {
		t.Fatalf("owner change plans:\n%s", dumpSQL(a))
	}
	if res, err := Apply(ctx, conn, s, Options{}); err != nil || res.Total != 1 || res.PerPhase[PhaseCreateAndAlterDatabases] != 1 {
		t.Fatalf("owner change: %+v, %v", res, err)
	}
	if got := dbOwner(t, conn, "zenith"); got != nullRole {
		t.Errorf("zenith owner %q after change, want %q", got, nullRole)
	}
	if a := planFor(t, conn, s); len(a) != 0 {
		t.Fatalf("after the changes, plans:\n%s", dumpSQL(a))
	}
}

func deref(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

// waitForPasswordAuth waits until the reloaded pg_hba.conf asks TCP clients for a
// password (cloud_admin has none, so its login must fail).
func waitForPasswordAuth(t *testing.T, inst *pgtest.Instance) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := pgx.Connect(ctx, inst.TCPConnstr(pgtest.AdminUser, "", "postgres"))
		if err != nil {
			return
		}
		c.Close(ctx)
		if time.Now().After(deadline) {
			t.Fatal("pg_hba.conf with md5 never took effect")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkLogin(t *testing.T, inst *pgtest.Instance, role, password string, wantOK bool) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, inst.TCPConnstr(role, password, "postgres"))
	if !wantOK {
		var pgErr *pgconn.PgError
		if err == nil {
			c.Close(ctx)
			t.Errorf("role %q logged in with a wrong password", role)
		} else if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("role %q with a wrong password: %v, want SQLSTATE 28P01", role, err)
		}
		return
	}
	if err != nil {
		t.Errorf("role %q cannot log in with its password: %v", role, err)
		return
	}
	defer c.Close(ctx)
	var user string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if user != role {
		t.Errorf("logged in as %q, want %q", user, role)
	}
}

// TestApplyKeepsPasswordsOutOfTheLog applies password DDL, succeeding and failing, on a
// server that logs every statement, and checks the log and the error.
func TestApplyKeepsPasswordsOutOfTheLog(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	okHash, failHash := randomHex(t, 16), randomHex(t, 16)

	s := specOf([]spec.Role{{Name: "log_role", EncryptedPassword: ptr(okHash)}}, nil)
	if _, err := Apply(ctx, conn, s, Options{}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A plan made from a stale (empty) catalog: CREATE ROLE fails because it exists.
	stale, err := Plan(specOf([]spec.Role{{Name: "log_role", EncryptedPassword: ptr(failHash)}}, nil), NewCatalog(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var roleActions []Action
	for _, a := range stale {
		if a.Phase == PhaseCreateAndAlterRoles {
			roleActions = append(roleActions, a)
		}
	}
	conn2 := connect(t, inst.Connstr())
	err = Execute(ctx, conn2, roleActions, nil)
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Code != "42710" || ae.Index != 0 || ae.Phase != PhaseCreateAndAlterRoles {
		t.Fatalf("Execute with a stale plan: %v, want an ActionError with SQLSTATE 42710 at index 0", err)
	}
	if !strings.HasPrefix(err.Error(), `apply: create role "log_role": `) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error text %q", err)
	}
	if strings.Contains(err.Error(), failHash) {
		t.Errorf("error text contains the password: %v", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42710" {
		t.Errorf("the server error is not in the chain: %v", err)
	}

	marker := "log-end-" + randomHex(t, 8)
	if _, err := connect(t, inst.Connstr()).Exec(ctx, "SELECT '"+marker+"'"); err != nil {
		t.Fatal(err)
	}
	log := waitForLog(t, inst, marker)
	for name, sec := range map[string]string{"applied": okHash, "failed": failHash} {
		if strings.Contains(log, sec) {
			t.Errorf("server log contains the password hash of the %s statement", name)
		}
	}
	if !strings.Contains(log, `role "log_role" already exists`) {
		t.Errorf("server log lacks the failing statement's error (is the test looking at the right log?)")
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
			t.Fatalf("marker %s never reached the server log", marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestApplyOwnerMissingRunsNothing(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf([]spec.Role{{Name: "om_role", EncryptedPassword: ptr(md5A)}},
		[]spec.Database{{Name: "om_db", Owner: "om_nobody"}})
	res, err := Apply(ctx, conn, s, Options{PrivilegedRole: "om_priv"})
	if err == nil || !strings.Contains(err.Error(), `database "om_db"`) || !strings.Contains(err.Error(), `owner "om_nobody"`) {
		t.Fatalf("Apply: %v, want an error naming the database and its owner", err)
	}
	if res.Total != 0 {
		t.Errorf("Result %+v, want nothing run", res)
	}
	for _, r := range []string{"om_role", "om_priv"} {
		if _, ok := readRole(t, conn, r); ok {
			t.Errorf("role %q was created although the plan failed", r)
		}
	}
}

func TestExecuteStopsAtFirstError(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	actions := []Action{
		{Phase: "P1", SQL: `CREATE ROLE stop_a`, Describe: "a"},
		{Phase: "P1", SQL: `CREATE ROLE stop_a`, Describe: "a again"},
		{Phase: "P2", SQL: `CREATE ROLE stop_c`, Describe: "c"},
	}
	err := Execute(ctx, conn, actions, nil)
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Index != 1 || ae.Describe != "a again" {
		t.Fatalf("Execute: %v, want the failure of action 1", err)
	}
	if _, ok := readRole(t, conn, "stop_a"); !ok {
		t.Error("action 0 did not run")
	}
	if _, ok := readRole(t, conn, "stop_c"); ok {
		t.Error("action 2 ran after the failure")
	}
}

// TestApplyOptionsAccepted runs every rendering kind against the real server.
func TestApplyOptionsAccepted(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	s := specOf(
		[]spec.Role{{Name: "opt_role", Options: spec.GenericOptions{
			opt("CONNECTION LIMIT", "5", "integer"), opt("VALID UNTIL", "infinity", "string"),
			flag("NOCREATEDB"), flag("NOINHERIT"), flag("LOGIN")}}},
		[]spec.Database{{Name: "opt db", Owner: "opt_role", Options: spec.GenericOptions{
			opt("ENCODING", "UTF8", "string"), opt("LOCALE_PROVIDER", "libc", "enum"), opt("LOCALE", "C", "string"),
			opt("TEMPLATE", "template0", "enum"), opt("ALLOW_CONNECTIONS", "true", "bool"),
			opt("CONNECTION LIMIT", "10", "integer"), opt("IS_TEMPLATE", "false", "bool"),
			opt("STRATEGY", "FILE_COPY", "enum"), opt("TABLESPACE", "pg_default", "string"), opt("OID", "70001", "integer")}}},
	)
	if _, err := Apply(ctx, conn, s, Options{}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var connlimit int
	var createdb, inherit, login bool
	var validUntil string
	if err := conn.QueryRow(ctx, `SELECT rolconnlimit, rolcreatedb, rolinherit, rolcanlogin, rolvaliduntil::text FROM pg_roles WHERE rolname = 'opt_role'`).
		Scan(&connlimit, &createdb, &inherit, &login, &validUntil); err != nil {
		t.Fatal(err)
	}
	if connlimit != 5 || createdb || inherit || !login || validUntil != "infinity" {
		t.Errorf("opt_role: connlimit=%d createdb=%v inherit=%v login=%v valid_until=%s", connlimit, createdb, inherit, login, validUntil)
	}
	var dbConnlimit int
	var oid uint32
	var collate string
	if err := conn.QueryRow(ctx, `SELECT datconnlimit, oid, datcollate FROM pg_database WHERE datname = 'opt db'`).Scan(&dbConnlimit, &oid, &collate); err != nil {
		t.Fatal(err)
	}
	if dbConnlimit != 10 || oid != 70001 || collate != "C" {
		t.Errorf("opt db: connlimit=%d oid=%d collate=%s", dbConnlimit, oid, collate)
	}
}

func TestReadCatalog(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	conn := connect(t, inst.Connstr())
	for _, q := range []string{
		`CREATE ROLE cat_pw PASSWORD 'md5` + md5A + `'`,
		`CREATE ROLE cat_nopw`,
		`CREATE DATABASE cat_db OWNER cat_pw ALLOW_CONNECTIONS false`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := ReadCatalog(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if r := cat.Roles["cat_pw"]; deref(r.Password) != "md5"+md5A {
		t.Errorf("cat_pw password %s", deref(r.Password))
	}
	if r, ok := cat.Roles["cat_nopw"]; !ok || r.Password != nil {
		t.Errorf("cat_nopw: %+v %v", r, ok)
	}
	if d := cat.Databases["cat_db"]; d.Owner != "cat_pw" || !d.RestrictConn || d.Invalid {
		t.Errorf("cat_db: %+v", d)
	}
	if d := cat.Databases["postgres"]; d.Owner != pgtest.AdminUser || d.RestrictConn || d.Invalid {
		t.Errorf("postgres: %+v", d)
	}
}

func TestExecuteRefusesSecretsWithoutQuietSession(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	admin := connect(t, inst.Connstr())
	if _, err := admin.Exec(ctx, `CREATE ROLE nq_user LOGIN CREATEROLE`); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, inst.Connstr()+"&user=nq_user")
	actions := []Action{
		{Phase: "P", SQL: `CREATE ROLE nq_plain`, Describe: "plain"},
		{Phase: "P", SQL: `CREATE ROLE nq_secret PASSWORD 'md5` + md5A + `'`, Secret: true, Describe: "secret", redact: []string{md5A}},
	}
	err := Execute(ctx, conn, actions, nil)
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Index != 1 || !strings.Contains(err.Error(), "quiet session") {
		t.Fatalf("Execute as a non-superuser: %v, want a quiet-session failure at action 1", err)
	}
	if _, ok := readRole(t, admin, "nq_plain"); !ok {
		t.Error("the action before the secret one did not run")
	}
	if _, ok := readRole(t, admin, "nq_secret"); ok {
		t.Error("the secret action ran in a session that logs statements")
	}
}

func TestActionErrorRedacts(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	a := Action{Phase: "P", Describe: "create role \"x\"", Secret: true, redact: []string{secret}}
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"server error", &pgconn.PgError{Severity: "ERROR", Code: "42601", Message: "syntax error at or near \"md5" + secret + "\"",
			Detail: "d " + secret, Hint: "h " + secret, Where: "w " + secret, InternalQuery: secret}, "42601"},
		{"other error", fmt.Errorf("write failed for %s", secret), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ae := newActionError(context.Background(), a, tc.err)
			if strings.Contains(ae.Error(), secret) {
				t.Errorf("Error() = %q contains the secret", ae.Error())
			}
			if !strings.HasPrefix(ae.Error(), `apply: create role "x": `) || !strings.Contains(ae.Error(), "<redacted>") {
				t.Errorf("Error() = %q", ae.Error())
			}
			if ae.Code != tc.code {
				t.Errorf("Code = %q, want %q", ae.Code, tc.code)
			}
			inner := errors.Unwrap(ae)
			if inner == nil || strings.Contains(fmt.Sprintf("%+v", inner), secret) {
				t.Errorf("wrapped error %+v is missing or leaks the secret", inner)
			}
			var pgErr *pgconn.PgError
			if errors.As(ae, &pgErr) && (strings.Contains(pgErr.Detail+pgErr.Hint+pgErr.Where+pgErr.InternalQuery, secret) || pgErr.Code != tc.code) {
				t.Errorf("wrapped PgError leaks the secret or lost its code: %+v", pgErr)
			}
		})
	}
	// The original is left untouched.
	if orig := tests[0].err.(*pgconn.PgError); !strings.Contains(orig.Detail, secret) {
		t.Error("newActionError modified the original error")
	}
	// A cancelled context is reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ae := newActionError(ctx, a, errors.New("conn closed")); !errors.Is(ae, context.Canceled) {
		t.Errorf("cancelled: %v does not wrap context.Canceled", ae)
	}
}

// TestPerDatabaseSessionsForwardDDLOff: the per-database sessions of an apply, whether
// made from Options.Connstr or from the main session's configuration, run with
// neon.forward_ddl off, as compute_ctl's maintenance sessions.
func TestPerDatabaseSessionsForwardDDLOff(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	main, err := pg.ConnectApply(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer main.Close(ctx)
	for name, opts := range map[string]Options{"from the connstr": {Connstr: inst.Connstr()}, "from the main session": {}} {
		c, err := connectDB(ctx, main, opts, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		var v string
		err = c.QueryRow(ctx, "SELECT current_setting('neon.forward_ddl')").Scan(&v)
		c.Close(ctx)
		if err != nil || v != "false" {
			t.Errorf("%s: neon.forward_ddl = %q, %v; want false", name, v, err)
		}
	}
}
