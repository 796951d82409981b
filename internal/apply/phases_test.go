package apply

import (
	"reflect"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

func sqlOf(actions []Action) []string {
	var out []string
	for _, a := range actions {
		out = append(out, a.Phase+": "+a.SQL)
	}
	return out
}

func delta(action, name string, newName ...string) spec.DeltaOp {
	d := spec.DeltaOp{Action: action, Name: name}
	if len(newName) > 0 {
		d.NewName = &newName[0]
	}
	return d
}

// mainCatalog is a settled catalog of a server whose connection is cloud_admin@postgres.
func mainCatalog() *Catalog {
	c := withPriv(map[string]*string{"cloud_admin": nil}, map[string]string{"postgres": "cloud_admin"})
	c.CurrentDatabase, c.CurrentUser = "postgres", "cloud_admin"
	return c
}

func TestPlanPhases(t *testing.T) {
	tests := []struct {
		name string
		spec *spec.ComputeSpec
		cat  func(c *Catalog)
		opts Options
		want []string
	}{
		{
			name: "rename role: md5 password is cleared by Postgres, so the spec password is set again",
			spec: func() *spec.ComputeSpec {
				s := specOf([]spec.Role{{Name: "new", EncryptedPassword: ptr(md5A)}}, nil)
				s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaRenameRole, "old", "new")}
				return s
			}(),
			cat: func(c *Catalog) { c.Roles["old"] = CatalogRole{Name: "old", Password: ptr("md5" + md5A)} },
			want: []string{
				`RenameRoles: ALTER ROLE "old" RENAME TO "new"`,
				`CreateAndAlterRoles: ALTER ROLE "new" LOGIN PASSWORD 'md5` + md5A + `'`,
			},
		},
		{
			name: "rename role: SCRAM password survives the rename; owned database follows",
			spec: func() *spec.ComputeSpec {
				s := specOf([]spec.Role{{Name: "new", EncryptedPassword: ptr(scramA)}}, []spec.Database{{Name: "d", Owner: "new"}})
				s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaRenameRole, "old", "new")}
				return s
			}(),
			cat: func(c *Catalog) {
				c.Roles["old"] = CatalogRole{Name: "old", Password: ptr(scramA)}
				c.Databases["d"] = CatalogDatabase{Name: "d", Owner: "old"}
			},
			want: []string{`RenameRoles: ALTER ROLE "old" RENAME TO "new"`},
		},
		{
			name: "rename role already done: nothing",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, nil)
				s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaRenameRole, "old", "new")}
				return s
			}(),
			cat: func(c *Catalog) { c.Roles["new"] = CatalogRole{Name: "new"} },
		},
		{
			name: "invalid database is dropped and a spec database of that name re-created",
			spec: specOf(nil, []spec.Database{{Name: "inv", Owner: "cloud_admin"}}),
			cat: func(c *Catalog) {
				c.Databases["inv"] = CatalogDatabase{Name: "inv", Owner: "cloud_admin", Invalid: true}
				c.Databases["inv2"] = CatalogDatabase{Name: "inv2", Owner: "cloud_admin", Invalid: true}
			},
			want: []string{
				`DropInvalidDatabases: DROP DATABASE IF EXISTS "inv"`,
				`DropInvalidDatabases: DROP DATABASE IF EXISTS "inv2"`,
				`CreateAndAlterDatabases: CREATE DATABASE "inv" OWNER "cloud_admin"`,
				`CreateAndAlterDatabases: GRANT ALL PRIVILEGES ON DATABASE "inv" TO "neon_superuser"`,
			},
		},
		{
			name: "delete and rename databases in delta order; template flag cleared first",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, nil)
				s.DeltaOperations = []spec.DeltaOp{
					delta(spec.DeltaDeleteDB, "tmpl"), delta(spec.DeltaDeleteDB, "plain"), delta(spec.DeltaDeleteDB, "gone"),
					delta(spec.DeltaRenameDB, "a", "b"), delta(spec.DeltaRenameDB, "b", "c"), delta(spec.DeltaRenameDB, "nope", "x"),
					delta("unknown_action", "whatever"),
				}
				return s
			}(),
			cat: func(c *Catalog) {
				c.Databases["tmpl"] = CatalogDatabase{Name: "tmpl", Owner: "cloud_admin", IsTemplate: true}
				c.Databases["plain"] = CatalogDatabase{Name: "plain", Owner: "cloud_admin"}
				c.Databases["a"] = CatalogDatabase{Name: "a", Owner: "cloud_admin"}
			},
			want: []string{
				`RenameAndDeleteDatabases: ALTER DATABASE "tmpl" IS_TEMPLATE false`,
				`RenameAndDeleteDatabases: DROP DATABASE IF EXISTS "tmpl" WITH (FORCE)`,
				`RenameAndDeleteDatabases: DROP DATABASE IF EXISTS "plain" WITH (FORCE)`,
				`RenameAndDeleteDatabases: ALTER DATABASE "a" RENAME TO "b"`,
				`RenameAndDeleteDatabases: ALTER DATABASE "b" RENAME TO "c"`,
			},
		},
		{
			name: "deleted role is dropped after the final extensions; absent one is not",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, nil)
				s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, "bye"), delta(spec.DeltaDeleteRole, "never")}
				return s
			}(),
			cat: func(c *Catalog) {
				c.Roles["bye"] = CatalogRole{Name: "bye"}
				c.SharedPreloadLibraries = []string{"pg_stat_statements"}
				c.Available["pg_stat_statements"] = "1.10"
			},
			want: []string{
				`HandleOtherExtensions: CREATE EXTENSION IF NOT EXISTS "pg_stat_statements"`,
				`DropRoles: DROP ROLE IF EXISTS "bye"`,
			},
		},
		{
			name: "deleted role owned database given away by the spec",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, []spec.Database{{Name: "d", Owner: "cloud_admin"}})
				s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, "bye")}
				return s
			}(),
			cat: func(c *Catalog) {
				c.Roles["bye"] = CatalogRole{Name: "bye"}
				c.Databases["d"] = CatalogDatabase{Name: "d", Owner: "bye"}
			},
			want: []string{
				`CreateAndAlterDatabases: ALTER DATABASE "d" OWNER TO "cloud_admin"`,
				`DropRoles: DROP ROLE IF EXISTS "bye"`,
			},
		},
		{
			name: "pg_stat_statements already installed: nothing",
			spec: specOf(nil, nil),
			cat: func(c *Catalog) {
				c.SharedPreloadLibraries = []string{"neon", "pg_stat_statements"}
				c.Available["pg_stat_statements"] = "1.10"
				c.Extensions["pg_stat_statements"] = CatalogExtension{Name: "pg_stat_statements", Schema: "public", Version: "1.10"}
			},
		},
		{
			name: "neon extension available, not installed",
			spec: specOf(nil, nil),
			cat:  func(c *Catalog) { c.Available["neon"] = "1.6" },
			want: []string{`HandleNeonExtension: CREATE EXTENSION IF NOT EXISTS neon WITH SCHEMA neon`},
		},
		{
			name: "neon extension in the wrong schema and old",
			spec: specOf(nil, nil),
			cat: func(c *Catalog) {
				c.Available["neon"] = "1.6"
				c.Extensions["neon"] = CatalogExtension{Name: "neon", Schema: "public", Version: "1.5"}
			},
			want: []string{
				`HandleNeonExtension: UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname = 'neon'; ALTER EXTENSION neon SET SCHEMA neon`,
				`HandleNeonExtension: ALTER EXTENSION neon UPDATE`,
			},
		},
		{
			name: "neon extension up to date: nothing",
			spec: specOf(nil, nil),
			cat: func(c *Catalog) {
				c.Available["neon"] = "1.6"
				c.Extensions["neon"] = CatalogExtension{Name: "neon", Schema: "neon", Version: "1.6"}
			},
		},
		{
			name: "neon extension missing on vanilla PostgreSQL: skipped",
			spec: specOf(nil, nil),
		},
		{
			name: "schema neon and health_check missing",
			spec: specOf(nil, nil),
			cat:  func(c *Catalog) { c.NeonSchema, c.HealthCheck = false, false },
			want: []string{
				`CreateSchemaNeon: CREATE SCHEMA IF NOT EXISTS neon`,
				`CreateAvailabilityCheck: CREATE TABLE IF NOT EXISTS public.health_check (id serial PRIMARY KEY, updated_at timestamptz DEFAULT now()); INSERT INTO public.health_check (id, updated_at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET updated_at = now()`,
			},
		},
		{
			name: "drop subscriptions: recorded for the timeline",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, nil)
				s.DropSubscriptionsBeforeStart = true
				s.TimelineID = ptr("de200bd42b49cc1814412c7e592dd6e9")
				return s
			}(),
			cat: func(c *Catalog) { c.DropSubscriptionsDone["0000"] = true },
			want: []string{`FinalizeDropLogicalSubscriptions: CREATE TABLE IF NOT EXISTS neon.drop_subscriptions_done (id serial PRIMARY KEY, timeline_id text); ` +
				`INSERT INTO neon.drop_subscriptions_done (id, timeline_id) VALUES (1, 'de200bd42b49cc1814412c7e592dd6e9') ON CONFLICT (id) DO UPDATE SET timeline_id = EXCLUDED.timeline_id`},
		},
		{
			name: "drop subscriptions: timeline from Options wins; already done: nothing",
			spec: func() *spec.ComputeSpec {
				s := specOf(nil, nil)
				s.DropSubscriptionsBeforeStart = true
				s.TimelineID = ptr("other")
				return s
			}(),
			cat:  func(c *Catalog) { c.DropSubscriptionsDone["tl1"] = true },
			opts: Options{TimelineID: "tl1"},
		},
		{
			name: "audit Base",
			spec: func() *spec.ComputeSpec { s := specOf(nil, nil); s.AuditLogLevel = spec.AuditBase; return s }(),
			cat:  func(c *Catalog) { c.Available["pgaudit"] = "1.7" },
			want: []string{
				`HandleAudit: CREATE EXTENSION IF NOT EXISTS "pgaudit"`,
				`HandleAudit: ALTER DATABASE "postgres" SET pgaudit.log TO 'none'`,
			},
		},
		{
			name: "audit Full, pgaudit installed and set",
			spec: func() *spec.ComputeSpec { s := specOf(nil, nil); s.AuditLogLevel = spec.AuditFull; return s }(),
			cat: func(c *Catalog) {
				c.Available["pgaudit"], c.Available["pgauditlogtofile"] = "1.7", "1.6"
				c.Extensions["pgaudit"] = CatalogExtension{Name: "pgaudit"}
				d := c.Databases["postgres"]
				d.Settings = []string{"work_mem=1MB", "pgaudit.log=none"}
				c.Databases["postgres"] = d
			},
			want: []string{`HandleAudit: CREATE EXTENSION IF NOT EXISTS "pgauditlogtofile"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cat := mainCatalog()
			if tc.cat != nil {
				tc.cat(cat)
			}
			got, err := Plan(tc.spec, cat, tc.opts)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if g := sqlOf(got); !reflect.DeepEqual(g, tc.want) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(g, "\n  "), strings.Join(tc.want, "\n  "))
			}
			for _, a := range got {
				if a.Describe == "" {
					t.Errorf("%s has no description", a.SQL)
				}
			}
			// Planning against the simulated result plans nothing.
			if again, err := Plan(tc.spec, Simulate(cat, got), tc.opts); err != nil || len(again) != 0 {
				t.Fatalf("re-plan after Simulate: %v\n%s", err, dumpSQL(again))
			}
		})
	}
}

func TestPlanPhaseErrors(t *testing.T) {
	withDelta := func(s *spec.ComputeSpec, d ...spec.DeltaOp) *spec.ComputeSpec {
		s.DeltaOperations = d
		return s
	}
	tests := []struct {
		name    string
		spec    *spec.ComputeSpec
		cat     func(c *Catalog)
		opts    Options
		wantErr []string
	}{
		{"rename role onto an existing role", withDelta(specOf(nil, nil), delta(spec.DeltaRenameRole, "a", "b")),
			func(c *Catalog) { c.Roles["a"], c.Roles["b"] = CatalogRole{Name: "a"}, CatalogRole{Name: "b"} },
			Options{}, []string{`"a"`, `"b"`, "both roles exist"}},
		{"rename role without new_name", withDelta(specOf(nil, nil), spec.DeltaOp{Action: spec.DeltaRenameRole, Name: "a"}),
			nil, Options{}, []string{"new_name"}},
		{"rename role to a too long name", withDelta(specOf(nil, nil), delta(spec.DeltaRenameRole, "a", strings.Repeat("n", 64))),
			nil, Options{}, []string{"64 bytes"}},
		{"rename database onto an existing one", withDelta(specOf(nil, nil), delta(spec.DeltaRenameDB, "x", "y")),
			func(c *Catalog) {
				c.Databases["x"], c.Databases["y"] = CatalogDatabase{Name: "x"}, CatalogDatabase{Name: "y"}
			},
			Options{}, []string{"both databases exist"}},
		{"delete the system database", withDelta(specOf(nil, nil), delta(spec.DeltaDeleteDB, "postgres")),
			nil, Options{}, []string{`"postgres"`, "system database"}},
		{"delete the privileged role", withDelta(specOf(nil, nil), delta(spec.DeltaDeleteRole, "neon_superuser")),
			nil, Options{}, []string{"reserved"}},
		{"delete the admin role", withDelta(specOf(nil, nil), delta(spec.DeltaDeleteRole, "cloud_admin")),
			nil, Options{}, []string{"reserved"}},
		{"delete a spec role", withDelta(specOf([]spec.Role{{Name: "r"}}, nil), delta(spec.DeltaDeleteRole, "r")),
			nil, Options{}, []string{`"r"`, "both a spec role and deleted"}},
		{"deleted role keeps owning a database", withDelta(specOf(nil, nil), delta(spec.DeltaDeleteRole, "bye")),
			func(c *Catalog) {
				c.Roles["bye"] = CatalogRole{Name: "bye"}
				c.Databases["kept"] = CatalogDatabase{Name: "kept", Owner: "bye"}
			}, Options{}, []string{`"bye"`, `"kept"`, "owns database"}},
		{"neon mode without the neon extension", specOf([]spec.Role{{Name: "r"}}, nil), nil, Options{Neon: true},
			[]string{"extension neon is not available"}},
		{"audit without pgaudit", func() *spec.ComputeSpec { s := specOf(nil, nil); s.AuditLogLevel = spec.AuditExtended; return s }(),
			nil, Options{}, []string{"audit_log_level Extended", "pgaudit"}},
		{"pg_stat_statements preloaded but not available", specOf(nil, nil),
			func(c *Catalog) { c.SharedPreloadLibraries = []string{"pg_stat_statements"} }, Options{}, []string{"pg_stat_statements"}},
		{"drop subscriptions without a timeline", func() *spec.ComputeSpec {
			s := specOf(nil, nil)
			s.DropSubscriptionsBeforeStart = true
			return s
		}(), nil, Options{}, []string{"timeline id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cat := mainCatalog()
			if tc.cat != nil {
				tc.cat(cat)
			}
			got, err := Plan(tc.spec, cat, tc.opts)
			if err == nil || got != nil {
				t.Fatalf("Plan = %d actions, %v; want an error and no actions", len(got), err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTargets(t *testing.T) {
	cat := mainCatalog()
	for _, d := range []CatalogDatabase{
		{Name: "a", Owner: "o1"}, {Name: "closed", Owner: "o1", RestrictConn: true},
		{Name: "broken", Owner: "o1", Invalid: true}, {Name: "extra", Owner: "o2"}, {Name: "template1", Owner: "cloud_admin", IsTemplate: true}, {Name: "z", Owner: "o2"},
	} {
		cat.Databases[d.Name] = d
	}
	cat.Roles["bye"] = CatalogRole{Name: "bye"}
	s := specOf(nil, []spec.Database{{Name: "a", Owner: "o1"}, {Name: "closed", Owner: "o1"}, {Name: "a", Owner: "o1"}, {Name: "missing", Owner: "o1"}})

	names := func(ts []DBTarget) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name+"/"+t.Kind.String()+"/"+t.Owner)
		}
		return out
	}
	got, skipped, err := Targets(s, cat, cat, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a/user/o1", "postgres/system/cloud_admin"}; !reflect.DeepEqual(names(got), want) {
		t.Errorf("without deleted roles: %v, want %v", names(got), want)
	}
	if len(skipped) != 2 || skipped[0].Name != "closed" || skipped[1].Name != "missing" {
		t.Errorf("skipped %+v", skipped)
	}

	s.DeltaOperations = []spec.DeltaOp{delta(spec.DeltaDeleteRole, "bye")}
	got, _, err = Targets(s, cat, cat, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/user/o1", "postgres/system/cloud_admin", "extra/other/o2", "z/other/o2"}
	if !reflect.DeepEqual(names(got), want) {
		t.Errorf("with a deleted role: %v, want %v", names(got), want)
	}
	if !reflect.DeepEqual(got[0].DeleteRoles, []string{"bye"}) || got[0].PrivilegedRole != "neon_superuser" || got[0].DropSubscriptions {
		t.Errorf("target %+v", got[0])
	}
	got, _, _ = Targets(s, cat, cat, Options{SystemDB: "extra", AdminRole: "boss"})
	if names(got)[1] != "extra/system/boss" {
		t.Errorf("SystemDB/AdminRole not used: %v", names(got))
	}
}

func TestPlanDB(t *testing.T) {
	base := DBTarget{Name: "d", Kind: DBUser, Owner: "owner", DeleteRoles: []string{"bye", "clean"},
		PrivilegedRole: "neon_superuser", AdminRoles: []string{"cloud_admin", "zenith_admin"}}
	settled := func() *DBCatalog {
		c := NewDBCatalog("d")
		c.PublicSchema, c.PublicOwner = true, "pg_database_owner"
		for _, p := range allTablePrivileges {
			c.DefaultPrivileges[DefaultPrivilege{"r", "neon_superuser", p}] = true
		}
		for _, p := range allSequencePrivileges {
			c.DefaultPrivileges[DefaultPrivilege{"S", "neon_superuser", p}] = true
		}
		return c
	}
	tests := []struct {
		name   string
		target func(t *DBTarget)
		cat    func(c *DBCatalog)
		want   []string
	}{
		{name: "settled: nothing"},
		{
			name: "deleted role with objects and grants from others",
			cat: func(c *DBCatalog) {
				c.RoleDeps["bye"], c.RoleDeps["someone"] = true, true
				c.TableGrants["bye"] = []TableGrant{{"public", "t1", "granter"}, {"My Schema", "T 2", "other"}, {"public", "t3", "granter"}}
			},
			want: []string{
				`DeleteDBRoleReferences: REASSIGN OWNED BY "bye" TO "owner"`,
				`DeleteDBRoleReferences: SET LOCAL ROLE "granter"; REVOKE ALL PRIVILEGES ON TABLE "public"."t1", "public"."t3" FROM "bye" GRANTED BY "granter"`,
				`DeleteDBRoleReferences: SET LOCAL ROLE "other"; REVOKE ALL PRIVILEGES ON TABLE "My Schema"."T 2" FROM "bye" GRANTED BY "other"`,
				`DeleteDBRoleReferences: DROP OWNED BY "bye"`,
			},
		},
		{
			name:   "database owned by the deleted role is left alone",
			target: func(t *DBTarget) { t.Owner = "bye" },
			cat:    func(c *DBCatalog) { c.RoleDeps["bye"] = true },
		},
		{
			name: "schema public owned by the admin; web_access; default privileges partly missing",
			cat: func(c *DBCatalog) {
				c.PublicOwner = "cloud_admin"
				c.WebAccess = true
				delete(c.DefaultPrivileges, DefaultPrivilege{"S", "neon_superuser", "USAGE"})
			},
			want: []string{
				`ChangeSchemaPerms: ALTER SCHEMA public OWNER TO "owner"`,
				`ChangeSchemaPerms: GRANT CREATE ON SCHEMA public TO web_access`,
				`ChangeSchemaPerms: ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO "neon_superuser" WITH GRANT OPTION`,
			},
		},
		{
			name:   "system database: no schema permissions",
			target: func(t *DBTarget) { t.Kind = DBSystem },
			cat:    func(c *DBCatalog) { c.DefaultPrivileges = map[DefaultPrivilege]bool{}; c.PublicOwner = "cloud_admin" },
		},
		{
			name: "no schema public: nothing",
			cat:  func(c *DBCatalog) { c.PublicSchema = false; c.DefaultPrivileges = map[DefaultPrivilege]bool{} },
		},
		{
			name:   "subscriptions dropped when asked",
			target: func(t *DBTarget) { t.DropSubscriptions = true },
			cat:    func(c *DBCatalog) { c.Subscriptions = []string{"sub 2", "sub1"} },
			want: []string{
				`DropLogicalSubscriptions: ALTER SUBSCRIPTION "sub 2" DISABLE`,
				`DropLogicalSubscriptions: ALTER SUBSCRIPTION "sub 2" SET (slot_name = NONE)`,
				`DropLogicalSubscriptions: DROP SUBSCRIPTION "sub 2"`,
				`DropLogicalSubscriptions: ALTER SUBSCRIPTION "sub1" DISABLE`,
				`DropLogicalSubscriptions: ALTER SUBSCRIPTION "sub1" SET (slot_name = NONE)`,
				`DropLogicalSubscriptions: DROP SUBSCRIPTION "sub1"`,
			},
		},
		{
			name: "subscriptions kept otherwise",
			cat:  func(c *DBCatalog) { c.Subscriptions = []string{"s"} },
		},
		{
			name:   "a database being deleted only loses its subscriptions",
			target: func(t *DBTarget) { t.Kind, t.DropSubscriptions = DBDropping, true },
			cat: func(c *DBCatalog) {
				c.Subscriptions = []string{"s"}
				c.RoleDeps["bye"] = true
				c.PublicOwner = "cloud_admin"
			},
			want: []string{
				`DropSubscriptionsOfDeletedDatabases: ALTER SUBSCRIPTION "s" DISABLE`,
				`DropSubscriptionsOfDeletedDatabases: ALTER SUBSCRIPTION "s" SET (slot_name = NONE)`,
				`DropSubscriptionsOfDeletedDatabases: DROP SUBSCRIPTION "s"`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := base
			if tc.target != nil {
				tc.target(&target)
			}
			cat := settled()
			if tc.cat != nil {
				tc.cat(cat)
			}
			before := cat.clone()
			got, err := PlanDB(target, cat)
			if err != nil {
				t.Fatal(err)
			}
			if g := sqlOf(got); !reflect.DeepEqual(g, tc.want) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(g, "\n  "), strings.Join(tc.want, "\n  "))
			}
			if !reflect.DeepEqual(cat, before) {
				t.Error("PlanDB changed its catalog")
			}
			for _, a := range got {
				if a.Database != "d" || a.Describe == "" {
					t.Errorf("action %+v lacks its database or description", a)
				}
			}
			if again, err := PlanDB(target, SimulateDB(cat, got)); err != nil || len(again) != 0 {
				t.Fatalf("re-plan after SimulateDB: %v\n%s", err, dumpSQL(again))
			}
		})
	}
}

func TestConcurrency(t *testing.T) {
	withSetting := func(v string) *spec.ComputeSpec {
		s := specOf(nil, nil)
		s.Cluster.Settings = spec.GenericOptions{opt("max_connections", v, "integer")}
		return s
	}
	withConf := func(conf string) *spec.ComputeSpec {
		s := specOf(nil, nil)
		s.Cluster.PostgresqlConf = &conf
		return s
	}
	tests := []struct {
		name string
		spec *spec.ComputeSpec
		want int
	}{
		{"not found", specOf(nil, nil), 10},
		{"nil spec", nil, 10},
		{"5", withSetting("5"), 5},
		{"9", withSetting("9"), 9},
		{"10", withSetting("10"), 10},
		{"29", withSetting("29"), 10},
		{"30", withSetting("30"), 10},
		{"100", withSetting("100"), 33},
		{"900", withSetting("900"), 300},
		{"0", withSetting("0"), 1},
		{"garbage setting", withSetting("many"), 10},
		{"postgresql_conf line", withConf("shared_buffers = 1MB\nmax_connections = 60 # comment\nmax_connections = 3\n"), 20},
		{"postgresql_conf quoted", withConf("max_connections='7'"), 7},
	}
	for _, tc := range tests {
		if got := StartupConcurrency(tc.spec); got != tc.want {
			t.Errorf("%s: StartupConcurrency = %d, want %d", tc.name, got, tc.want)
		}
	}
	s := specOf(nil, nil)
	if got := ReconfigureConcurrency(s); got != 1 {
		t.Errorf("ReconfigureConcurrency default = %d, want 1", got)
	}
	s.ReconfigureConcurrency = 4
	if got := ReconfigureConcurrency(s); got != 4 {
		t.Errorf("ReconfigureConcurrency = %d, want 4", got)
	}
}
