package apply

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

func ptr[T any](v T) *T { return &v }

const (
	md5A   = "6b1d16b78004bbd51fa06af9eda75972"
	md5B   = "5b1d16b78004bbd51fa06af9eda75972"
	scramA = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=:HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4="
	scramB = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

const createPriv = `CREATE ROLE "neon_superuser" CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS IN ROLE pg_read_all_data, pg_write_all_data`

// catalogWith is a catalog with the given roles and databases whose main database is
// otherwise settled (schema neon and health_check exist), so that only role and database
// phases plan anything.
func catalogWith(roles map[string]*string, dbs map[string]string) *Catalog {
	c := NewCatalog()
	c.NeonSchema, c.HealthCheck = true, true
	for n, p := range roles {
		c.Roles[n] = CatalogRole{Name: n, Password: p}
	}
	for n, o := range dbs {
		c.Databases[n] = CatalogDatabase{Name: n, Owner: o}
	}
	return c
}

// withPriv is a catalog that already has the privileged role.
func withPriv(roles map[string]*string, dbs map[string]string) *Catalog {
	if roles == nil {
		roles = map[string]*string{}
	}
	roles["neon_superuser"] = nil
	return catalogWith(roles, dbs)
}

func specOf(roles []spec.Role, dbs []spec.Database) *spec.ComputeSpec {
	return &spec.ComputeSpec{Cluster: spec.Cluster{Roles: roles, Databases: dbs}}
}

func opt(name, value, vartype string) spec.GenericOption {
	return spec.GenericOption{Name: name, Value: &value, Vartype: vartype}
}

func flag(name string) spec.GenericOption { return spec.GenericOption{Name: name, Vartype: "bool"} }

func TestPlan(t *testing.T) {
	tests := []struct {
		name string
		spec *spec.ComputeSpec
		cat  *Catalog
		opts Options
		want []Action // Phase, SQL, Secret compared; Describe checked separately
	}{
		{
			name: "fresh cluster, Neon fixture roles and database",
			spec: specOf(
				[]spec.Role{
					{Name: "postgres", EncryptedPassword: ptr(md5A)},
					{Name: "alexk"},
				},
				[]spec.Database{{Name: "DB2", Owner: "alexk", Options: spec.GenericOptions{
					opt("LC_COLLATE", "C", "string"), opt("LC_CTYPE", "C", "string"), opt("TEMPLATE", "template0", "enum"),
				}}},
			),
			cat: catalogWith(map[string]*string{"cloud_admin": nil}, map[string]string{"postgres": "cloud_admin"}),
			want: []Action{
				{Phase: PhaseCreatePrivilegedRole, SQL: createPriv},
				{Phase: PhaseCreateAndAlterRoles, Secret: true,
					SQL: `CREATE ROLE "postgres" INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE "neon_superuser" LOGIN PASSWORD 'md5` + md5A + `'`},
				{Phase: PhaseCreateAndAlterRoles,
					SQL: `CREATE ROLE "alexk" INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE "neon_superuser" LOGIN PASSWORD NULL`},
				{Phase: PhaseCreateAndAlterDatabases,
					SQL: `CREATE DATABASE "DB2" LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE "template0" OWNER "alexk"`},
				{Phase: PhaseCreateAndAlterDatabases, SQL: `GRANT ALL PRIVILEGES ON DATABASE "DB2" TO "neon_superuser"`},
			},
		},
		{
			name: "privileged role present is not re-created; custom privileged role name",
			spec: specOf([]spec.Role{{Name: "r"}}, nil),
			cat:  catalogWith(map[string]*string{"my priv": nil}, nil),
			opts: Options{PrivilegedRole: "my priv"},
			want: []Action{{Phase: PhaseCreateAndAlterRoles,
				SQL: `CREATE ROLE "r" INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE "my priv" LOGIN PASSWORD NULL`}},
		},
		{
			name: "custom privileged role missing is created",
			spec: specOf(nil, nil),
			cat:  catalogWith(nil, nil),
			opts: Options{PrivilegedRole: "admins"},
			want: []Action{{Phase: PhaseCreatePrivilegedRole,
				SQL: `CREATE ROLE "admins" CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS IN ROLE pg_read_all_data, pg_write_all_data`}},
		},
		{
			name: "md5 password differs: one ALTER",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(md5A)}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr("md5" + md5B)}, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, Secret: true,
				SQL: `ALTER ROLE "u" LOGIN PASSWORD 'md5` + md5A + `'`}},
		},
		{
			name: "md5 password equal (catalog has the md5 prefix): nothing",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(md5A)}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr("md5" + md5A)}, nil),
		},
		{
			name: "md5 in upper case equals the stored lower case",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(strings.ToUpper(md5A))}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr("md5" + md5A)}, nil),
		},
		{
			name: "SCRAM equal: nothing",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(scramA)}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr(scramA)}, nil),
		},
		{
			name: "SCRAM differs: ALTER with the verifier verbatim",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(scramA)}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr(scramB)}, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, Secret: true,
				SQL: `ALTER ROLE "u" LOGIN PASSWORD '` + scramA + `'`}},
		},
		{
			name: "stored md5, spec SCRAM: ALTER",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(scramA)}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr("md5" + md5A)}, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, Secret: true,
				SQL: `ALTER ROLE "u" LOGIN PASSWORD '` + scramA + `'`}},
		},
		{
			name: "null and null: nothing",
			spec: specOf([]spec.Role{{Name: "u"}}, nil),
			cat:  withPriv(map[string]*string{"u": nil}, nil),
		},
		{
			name: "password removed: ALTER ... PASSWORD NULL, not secret",
			spec: specOf([]spec.Role{{Name: "u"}}, nil),
			cat:  withPriv(map[string]*string{"u": ptr("md5" + md5A)}, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, SQL: `ALTER ROLE "u" LOGIN PASSWORD NULL`}},
		},
		{
			name: "role options: allowed, rendered by kind, override defaults, LOGIN not repeated",
			spec: specOf([]spec.Role{{Name: "u", Options: spec.GenericOptions{
				opt("CONNECTION LIMIT", "5", "integer"), flag("nocreatedb"), opt("valid_until", "2030-01-01 00:00:00+00", "string"),
				flag("LOGIN"), flag("NOINHERIT"),
			}}}, nil),
			cat: withPriv(nil, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles,
				SQL: `CREATE ROLE "u" CREATEROLE BYPASSRLS REPLICATION IN ROLE "neon_superuser" CONNECTION LIMIT 5 NOCREATEDB VALID UNTIL '2030-01-01 00:00:00+00' NOINHERIT LOGIN PASSWORD NULL`}},
		},
		{
			name: "role options on ALTER",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(md5A), Options: spec.GenericOptions{flag("SUPERUSER")}}}, nil),
			cat:  withPriv(map[string]*string{"u": nil}, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, Secret: true,
				SQL: `ALTER ROLE "u" SUPERUSER LOGIN PASSWORD 'md5` + md5A + `'`}},
		},
		{
			name: "database options: every allowed kind",
			spec: specOf(nil, []spec.Database{{Name: "d", Owner: "o", Options: spec.GenericOptions{
				opt("ENCODING", "UTF8", "string"), opt("locale", "C.UTF-8", "string"), opt("LOCALE_PROVIDER", "LIBC", "enum"),
				opt("ICU_LOCALE", "und", "string"), opt("COLLATION_VERSION", "1.2", "string"),
				opt("TABLESPACE", "pg_default", "string"), opt("ALLOW_CONNECTIONS", "yes", "bool"),
				opt("connection_limit", "-1", "integer"), opt("IS_TEMPLATE", "off", "bool"),
				opt("STRATEGY", "File_Copy", "enum"), opt("OID", "70000", "integer"),
			}}}),
			cat: withPriv(map[string]*string{"o": nil}, nil),
			want: []Action{
				{Phase: PhaseCreateAndAlterDatabases,
					SQL: `CREATE DATABASE "d" ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER libc ICU_LOCALE 'und' COLLATION_VERSION '1.2' TABLESPACE "pg_default" ALLOW_CONNECTIONS true CONNECTION LIMIT -1 IS_TEMPLATE false STRATEGY file_copy OID 70000 OWNER "o"`},
				{Phase: PhaseCreateAndAlterDatabases, SQL: `GRANT ALL PRIVILEGES ON DATABASE "d" TO "neon_superuser"`},
			},
		},
		{
			name: "string values are quoted, whatever the vartype",
			spec: specOf(nil, []spec.Database{{Name: "d", Owner: "o", Options: spec.GenericOptions{
				opt("LC_COLLATE", "it's", "enum"),
			}}}),
			cat: withPriv(map[string]*string{"o": nil}, nil),
			want: []Action{
				{Phase: PhaseCreateAndAlterDatabases, SQL: `CREATE DATABASE "d" LC_COLLATE 'it''s' OWNER "o"`},
				{Phase: PhaseCreateAndAlterDatabases, SQL: `GRANT ALL PRIVILEGES ON DATABASE "d" TO "neon_superuser"`},
			},
		},
		{
			name: "existing database with another owner: one ALTER DATABASE",
			spec: specOf(nil, []spec.Database{{Name: "d", Owner: "new owner"}}),
			cat:  withPriv(map[string]*string{"new owner": nil, "old": nil}, map[string]string{"d": "old"}),
			want: []Action{{Phase: PhaseCreateAndAlterDatabases, SQL: `ALTER DATABASE "d" OWNER TO "new owner"`}},
		},
		{
			name: "existing database, same owner: nothing (options are not compared)",
			spec: specOf(nil, []spec.Database{{Name: "d", Owner: "o", Options: spec.GenericOptions{opt("TEMPLATE", "template0", "enum")}}}),
			cat:  withPriv(map[string]*string{"o": nil}, map[string]string{"d": "o"}),
		},
		{
			name: "owner is an existing role outside the spec",
			spec: specOf(nil, []spec.Database{{Name: "d", Owner: "cloud_admin"}}),
			cat:  withPriv(map[string]*string{"cloud_admin": nil}, nil),
			want: []Action{
				{Phase: PhaseCreateAndAlterDatabases, SQL: `CREATE DATABASE "d" OWNER "cloud_admin"`},
				{Phase: PhaseCreateAndAlterDatabases, SQL: `GRANT ALL PRIVILEGES ON DATABASE "d" TO "neon_superuser"`},
			},
		},
		{
			name: "local_proxy JWKS role is created without the default attributes",
			spec: func() *spec.ComputeSpec {
				s := specOf([]spec.Role{{Name: "jwt_user"}}, nil)
				s.LocalProxyConfig = &spec.LocalProxySpec{JWKS: []spec.JWKSSettings{{RoleNames: []string{"jwt_user"}}}}
				return s
			}(),
			cat:  withPriv(nil, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, SQL: `CREATE ROLE "jwt_user" LOGIN PASSWORD NULL`}},
		},
		{
			name: "a role listed twice is created once",
			spec: specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(md5A)}, {Name: "u", EncryptedPassword: ptr(md5A)}}, nil),
			cat:  withPriv(nil, nil),
			want: []Action{{Phase: PhaseCreateAndAlterRoles, Secret: true,
				SQL: `CREATE ROLE "u" INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE "neon_superuser" LOGIN PASSWORD 'md5` + md5A + `'`}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.spec, tc.cat, tc.opts)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d actions, want %d:\n%s", len(got), len(tc.want), dumpSQL(got))
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.Phase != w.Phase || g.SQL != w.SQL || g.Secret != w.Secret {
					t.Errorf("action %d:\n got %s %q secret=%v\nwant %s %q secret=%v", i, g.Phase, g.SQL, g.Secret, w.Phase, w.SQL, w.Secret)
				}
				if g.Describe == "" {
					t.Errorf("action %d has no description", i)
				}
				checkNoSecretOutsideSQL(t, g)
			}
		})
	}
}

func dumpSQL(actions []Action) string {
	var b strings.Builder
	for _, a := range actions {
		fmt.Fprintf(&b, "  %s: %s\n", a.Phase, a.SQL)
	}
	return b.String()
}

// checkNoSecretOutsideSQL: the password may only appear in SQL, never in the log-safe
// renderings of an action.
func checkNoSecretOutsideSQL(t *testing.T, a Action) {
	t.Helper()
	for _, sec := range a.redact {
		for _, s := range []string{a.Describe, a.String(), fmt.Sprintf("%v", a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), a.LogValue().String()} {
			if strings.Contains(s, sec) {
				t.Errorf("log-safe rendering %q contains the password", s)
			}
		}
	}
	if a.Secret && len(a.redact) == 0 {
		t.Errorf("secret action %s has nothing to redact", a.Describe)
	}
}

func TestPlanErrors(t *testing.T) {
	role := func(o ...spec.GenericOption) *spec.ComputeSpec {
		return specOf([]spec.Role{{Name: "bob", Options: o}}, nil)
	}
	db := func(o ...spec.GenericOption) *spec.ComputeSpec {
		return specOf(nil, []spec.Database{{Name: "shop", Owner: "cloud_admin", Options: o}})
	}
	long := strings.Repeat("x", 64)
	tests := []struct {
		name     string
		spec     *spec.ComputeSpec
		wantErr  []string // all must appear in the error
		mustHide string   // must not appear in the error
	}{
		{"nil spec", nil, []string{"no spec"}, ""},
		{"role option not allowed", role(opt("PASSWORD", "x", "string")), []string{`role "bob"`, `"PASSWORD"`, "not allowed"}, ""},
		{"role option smuggling SQL", role(flag("CREATEDB; DROP DATABASE postgres")), []string{`role "bob"`, "not allowed"}, ""},
		{"role option IN ROLE", role(opt("IN ROLE", "pg_read_server_files", "string")), []string{`role "bob"`, `"IN ROLE"`}, ""},
		{"role connection limit not an integer", role(opt("CONNECTION LIMIT", "5; DROP ROLE x", "integer")), []string{`role "bob"`, "CONNECTION LIMIT", "not an integer"}, ""},
		{"role connection limit below -1", role(opt("CONNECTION LIMIT", "-2", "integer")), []string{"CONNECTION LIMIT"}, ""},
		{"role flag with a value", role(opt("CREATEDB", "true", "bool")), []string{`role "bob"`, "CREATEDB", "takes no value"}, ""},
		{"role VALID UNTIL without value", role(flag("VALID UNTIL")), []string{"VALID UNTIL", "needs a value"}, ""},
		{"role NOLOGIN", role(flag("NOLOGIN")), []string{`role "bob"`, "NOLOGIN"}, ""},
		{"role conflicting options", role(flag("CREATEDB"), flag("NOCREATEDB")), []string{`role "bob"`, "conflicts"}, ""},
		{"database OWNER option", db(opt("OWNER", "postgres", "string")), []string{`database "shop"`, `"OWNER"`, "not allowed"}, ""},
		{"database unknown option", db(opt("LOCATION", "/tmp", "string")), []string{`database "shop"`, `"LOCATION"`}, ""},
		{"database option smuggling SQL", db(opt("TEMPLATE template0; DROP", "x", "string")), []string{`database "shop"`, "not allowed"}, ""},
		{"database bool", db(opt("IS_TEMPLATE", "maybe", "bool")), []string{`database "shop"`, "IS_TEMPLATE", "not a boolean"}, ""},
		{"database NUL in literal", db(opt("LC_COLLATE", "C\x00", "string")), []string{`database "shop"`, "LC_COLLATE", "NUL"}, ""},
		{"database strategy", db(opt("STRATEGY", "fast", "enum")), []string{"STRATEGY", "wal_log"}, ""},
		{"database OID", db(opt("OID", "0", "integer")), []string{"OID"}, ""},
		{"database TEMPLATE without value", db(flag("TEMPLATE")), []string{"TEMPLATE", "needs a value"}, ""},
		{"database duplicate option", db(opt("LC_COLLATE", "C", "string"), opt("lc_collate", "C", "string")), []string{"conflicts"}, ""},
		{"md5 with prefix", specOf([]spec.Role{{Name: "bob", EncryptedPassword: ptr("md5" + md5A)}}, nil), []string{`role "bob"`, "md5"}, md5A},
		{"md5 too short", specOf([]spec.Role{{Name: "bob", EncryptedPassword: ptr("abc123")}}, nil), []string{`role "bob"`}, "abc123"},
		{"md5 not hex", specOf([]spec.Role{{Name: "bob", EncryptedPassword: ptr(strings.Repeat("z", 32))}}, nil), []string{`role "bob"`}, "zzzz"},
		{"clear-text password", specOf([]spec.Role{{Name: "bob", EncryptedPassword: ptr("hunter2-secret")}}, nil), []string{`role "bob"`}, "hunter2"},
		{"bad SCRAM", specOf([]spec.Role{{Name: "bob", EncryptedPassword: ptr("SCRAM-SHA-256$4096:c2FsdA==$c2VjcmV0LXN0b3JlZA==:eA==")}}, nil), []string{`role "bob"`, "SCRAM"}, "c2VjcmV0LXN0b3JlZA"},
		{"owner missing", specOf([]spec.Role{{Name: "alice"}}, []spec.Database{{Name: "shop", Owner: "nobody"}}), []string{`database "shop"`, `owner "nobody"`}, ""},
		{"empty owner", specOf(nil, []spec.Database{{Name: "shop"}}), []string{`database "shop"`, "owner"}, ""},
		{"empty role name", specOf([]spec.Role{{Name: ""}}, nil), []string{"empty name"}, ""},
		{"role name too long", specOf([]spec.Role{{Name: long}}, nil), []string{"64 bytes"}, ""},
		{"database name too long", specOf(nil, []spec.Database{{Name: long, Owner: "cloud_admin"}}), []string{"64 bytes"}, ""},
		{"role name with NUL", specOf([]spec.Role{{Name: "a\x00b"}}, nil), []string{"NUL"}, ""},
		{"reserved role name", specOf([]spec.Role{{Name: "pg_bob"}}, nil), []string{`role "pg_bob"`, "reserved"}, ""},
		{"privileged role as spec role", specOf([]spec.Role{{Name: "neon_superuser"}}, nil), []string{`role "neon_superuser"`, "privileged"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cat := withPriv(map[string]*string{"cloud_admin": nil}, nil)
			got, err := Plan(tc.spec, cat, Options{})
			if err == nil {
				t.Fatalf("Plan succeeded with %d actions, want an error:\n%s", len(got), dumpSQL(got))
			}
			if got != nil {
				t.Errorf("Plan returned actions with its error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.mustHide != "" && strings.Contains(err.Error(), tc.mustHide) {
				t.Errorf("error %q quotes the password", err)
			}
		})
	}
}

func TestPlanOwnerMissingFailsBeforeAnything(t *testing.T) {
	// Roles and the privileged role would be created, but the database phase fails: the
	// plan must be refused as a whole.
	s := specOf([]spec.Role{{Name: "alice", EncryptedPassword: ptr(md5A)}},
		[]spec.Database{{Name: "ok", Owner: "alice"}, {Name: "shop", Owner: "nobody"}})
	got, err := Plan(s, NewCatalog(), Options{})
	if err == nil || len(got) != 0 {
		t.Fatalf("Plan = %d actions, %v; want no actions and an error", len(got), err)
	}
	for _, w := range []string{"shop", "nobody", PhaseCreateAndAlterDatabases} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

func TestPlanQuotesNames(t *testing.T) {
	names := []string{
		`zenith "new"`,
		"\"name\";\n select 1;",
		`"name";\n select 1;`,
		"MyRole",
		"ünïcødé 名前",
		"with space",
		strings.Repeat("é", 31) + "x", // 63 bytes
		"select",
		"it's",
		`back\slash`,
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			if len(n) > maxNameLen {
				t.Fatalf("test name is %d bytes", len(n))
			}
			s := specOf([]spec.Role{{Name: n, EncryptedPassword: ptr(md5A)}},
				[]spec.Database{{Name: n, Owner: n}})
			got, err := Plan(s, withPriv(nil, nil), Options{})
			if err != nil {
				t.Fatal(err)
			}
			q := `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
			want := []string{
				`CREATE ROLE ` + q + ` INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE "neon_superuser" LOGIN PASSWORD 'md5` + md5A + `'`,
				`CREATE DATABASE ` + q + ` OWNER ` + q,
				`GRANT ALL PRIVILEGES ON DATABASE ` + q + ` TO "neon_superuser"`,
			}
			var sqls []string
			for _, a := range got {
				sqls = append(sqls, a.SQL)
			}
			if !reflect.DeepEqual(sqls, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(sqls, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestPlanDoesNotChangeCatalog(t *testing.T) {
	cat := withPriv(map[string]*string{"u": ptr("md5" + md5B), "o": nil}, map[string]string{"d": "u"})
	before := cat.clone()
	s := specOf([]spec.Role{{Name: "u", EncryptedPassword: ptr(md5A)}, {Name: "v"}},
		[]spec.Database{{Name: "d", Owner: "o"}, {Name: "e", Owner: "v"}})
	if _, err := Plan(s, cat, Options{}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cat, before) {
		t.Fatalf("Plan changed its catalog argument")
	}
}

func TestPlanNeonFixtureRoles(t *testing.T) {
	// The role and database lists of Neon's cluster_spec.json fixture.
	s := specOf(
		[]spec.Role{
			{Name: "postgres", EncryptedPassword: ptr("6b1d16b78004bbd51fa06af9eda75972")},
			{Name: "alexk"},
			{Name: `zenith "new"`, EncryptedPassword: ptr("5b1d16b78004bbd51fa06af9eda75972")},
			{Name: "zen", EncryptedPassword: ptr("9b1d16b78004bbd51fa06af9eda75972")},
			{Name: `"name";\n select 1;`, EncryptedPassword: ptr("5b1d16b78004bbd51fa06af9eda75972")},
			{Name: "MyRole", EncryptedPassword: ptr("5b1d16b78004bbd51fa06af9eda75972")},
		},
		[]spec.Database{
			{Name: "DB2", Owner: "alexk", Options: spec.GenericOptions{opt("LC_COLLATE", "C", "string"), opt("LC_CTYPE", "C", "string"), opt("TEMPLATE", "template0", "enum")}},
			{Name: "zenith", Owner: "MyRole"},
			{Name: "zen", Owner: "zen"},
		})
	got, err := Plan(s, NewCatalog(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	perPhase := count(got).PerPhase
	want := map[string]int{PhaseCreatePrivilegedRole: 1, PhaseCreateAndAlterRoles: 6, PhaseCreateAndAlterDatabases: 6,
		PhaseCreateSchemaNeon: 1, PhaseCreateAvailabilityCheck: 1}
	if !reflect.DeepEqual(perPhase, want) {
		t.Fatalf("per phase %v, want %v", perPhase, want)
	}
	// Phases come in Neon's order.
	order := map[string]int{}
	for i, ph := range phases {
		order[ph.name] = i
	}
	for i := 1; i < len(got); i++ {
		if order[got[i].Phase] < order[got[i-1].Phase] {
			t.Fatalf("action %d (%s) after %s", i, got[i].Phase, got[i-1].Phase)
		}
	}
}
