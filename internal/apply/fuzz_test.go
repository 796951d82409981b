package apply

import (
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

// fuzzNames is the name pool of the fuzz generator: names that need quoting, a 63-byte
// name, reserved names and names the planner must refuse.
var fuzzNames = []string{
	"a", "b", "My Role", `q"uote`, "it's", "ünïcødé", "select", strings.Repeat("é", 31) + "x",
	"neon_superuser", "cloud_admin", "postgres", "pg_x", "",
}

// fuzzValidNames is the part of fuzzNames a spec may use for anything.
const fuzzValidNames = 8

var fuzzPasswords = []*string{nil, ptr(md5A), ptr(md5B), ptr(scramA), ptr(scramB), ptr("md5" + md5A), ptr("clear")}

// byteSource hands out small numbers from fuzz input, then zeros.
type byteSource struct{ b []byte }

func (s *byteSource) next(n int) int {
	if len(s.b) == 0 || n <= 0 {
		return 0
	}
	v := int(s.b[0]) % n
	s.b = s.b[1:]
	return v
}

func (s *byteSource) flag() bool { return s.next(2) == 1 }

// name is mostly a valid name, sometimes one the planner may refuse.
func (s *byteSource) name() string {
	if s.next(8) == 0 {
		return fuzzNames[s.next(len(fuzzNames))]
	}
	return fuzzNames[s.next(fuzzValidNames)]
}

// fuzzInput builds a catalog and a spec from data.
func fuzzInput(data []byte) (*Catalog, *spec.ComputeSpec, Options) {
	src := &byteSource{b: data}
	cat := NewCatalog()
	cat.CurrentDatabase, cat.CurrentUser = "postgres", "cloud_admin"
	cat.Roles["cloud_admin"] = CatalogRole{Name: "cloud_admin"}
	cat.Databases["postgres"] = CatalogDatabase{Name: "postgres", Owner: "cloud_admin"}
	for i, n := 0, src.next(6); i < n; i++ {
		name := src.name()
		if name == "" {
			continue
		}
		pw := fuzzPasswords[src.next(4)]
		if pw != nil && !strings.HasPrefix(*pw, "SCRAM") {
			pw = ptr("md5" + *pw) // stored md5 hashes carry the prefix
		}
		cat.Roles[name] = CatalogRole{Name: name, Password: pw}
	}
	roles := sortedKeys(cat.Roles)
	for i, n := 0, src.next(5); i < n; i++ {
		name := src.name()
		if name == "" || name == "postgres" {
			continue
		}
		cat.Databases[name] = CatalogDatabase{
			Name: name, Owner: roles[src.next(len(roles))],
			Invalid: src.next(4) == 0, IsTemplate: src.next(4) == 0, RestrictConn: src.next(5) == 0,
		}
	}
	cat.NeonSchema, cat.HealthCheck = src.flag(), src.flag()
	if src.flag() {
		cat.Available["neon"] = "1.6"
		if src.flag() {
			cat.Extensions["neon"] = CatalogExtension{Name: "neon", Schema: []string{"neon", "public"}[src.next(2)], Version: []string{"1.6", "1.5"}[src.next(2)]}
		}
	}
	if src.flag() {
		cat.SharedPreloadLibraries = []string{"pg_stat_statements"}
		cat.Available["pg_stat_statements"] = "1.10"
	}
	if src.flag() {
		cat.Available["pgaudit"], cat.Available["pgauditlogtofile"] = "1.7", "1.6"
	}
	if src.flag() {
		cat.DropSubscriptionsDone["tl"] = true
	}

	s := &spec.ComputeSpec{}
	for i, n := 0, src.next(5); i < n; i++ {
		r := spec.Role{Name: src.name(), EncryptedPassword: fuzzPasswords[src.next(5)]}
		if src.next(16) == 0 {
			r.EncryptedPassword = fuzzPasswords[src.next(len(fuzzPasswords))]
		}
		if src.next(8) == 0 {
			r.Options = spec.GenericOptions{flag([]string{"NOINHERIT", "CREATEDB", "NOLOGIN", "EVIL; DROP"}[src.next(4)])}
		}
		if hasRole(s.Cluster.Roles, r.Name) && src.next(8) != 0 {
			continue // duplicates only sometimes
		}
		s.Cluster.Roles = append(s.Cluster.Roles, r)
	}
	for i, n := 0, src.next(5); i < n; i++ {
		d := spec.Database{Name: src.name(), Owner: src.name()}
		if len(s.Cluster.Roles) > 0 && src.flag() {
			d.Owner = s.Cluster.Roles[src.next(len(s.Cluster.Roles))].Name
		}
		if src.next(4) == 0 {
			d.Options = spec.GenericOptions{opt([]string{"IS_TEMPLATE", "ALLOW_CONNECTIONS", "TEMPLATE"}[src.next(3)], "false", "bool")}
		}
		if hasDB(s.Cluster.Databases, d.Name) && src.next(8) != 0 {
			continue
		}
		s.Cluster.Databases = append(s.Cluster.Databases, d)
	}
	actions := []string{spec.DeltaDeleteRole, spec.DeltaRenameRole, spec.DeltaDeleteDB, spec.DeltaRenameDB, "other"}
	for i, n := 0, src.next(5); i < n; i++ {
		d := spec.DeltaOp{Action: actions[src.next(len(actions))], Name: src.name()}
		if src.next(5) != 0 {
			d.NewName = ptr(src.name())
		}
		s.DeltaOperations = append(s.DeltaOperations, d)
	}
	s.DropSubscriptionsBeforeStart = src.flag()
	if src.next(4) != 0 {
		s.TimelineID = ptr("tl")
	}
	s.AuditLogLevel = spec.AuditLevels[src.next(len(spec.AuditLevels))]
	if src.flag() {
		s.LocalProxyConfig = &spec.LocalProxySpec{JWKS: []spec.JWKSSettings{{RoleNames: []string{src.name()}}}}
	}
	return cat, s, Options{Neon: src.next(8) == 0}
}

func hasRole(list []spec.Role, name string) bool {
	for _, r := range list {
		if r.Name == name {
			return true
		}
	}
	return false
}

func hasDB(list []spec.Database, name string) bool {
	for _, d := range list {
		if d.Name == name {
			return true
		}
	}
	return false
}

// FuzzPlanIdempotent: Plan never panics, refuses with no actions, and a plan applied to
// the catalog (Simulate) leaves nothing to plan. The per-database planner is checked the
// same way against a catalog built from the same input.
func FuzzPlanIdempotent(f *testing.F) {
	seeds := [][]byte{
		nil,
		{5, 1, 0, 2, 1, 3, 2},
		{3, 0, 1, 1, 2, 2, 3, 4, 0, 1, 2, 3, 1, 1, 0, 0, 1, 1, 2, 0, 3, 1, 4, 2},
		[]byte("the quick brown fox jumps over the lazy dog, 0123456789"),
		{5, 0, 0, 1, 1, 2, 2, 3, 3, 4, 1, 4, 0, 1, 0, 0, 0, 1, 2, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 4, 0, 0, 0, 1, 0, 0, 1, 1, 2, 0, 4, 0, 1, 3, 1, 2, 0, 1, 3, 4},
		{2, 0, 0, 1, 2, 4, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 3, 3, 1, 0, 1, 0, 1, 2, 1, 1, 1},
	}
	for i := 0; i < 300; i++ {
		b := make([]byte, 96)
		x := uint32(i*2654435761 + 1)
		for j := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[j] = byte(x)
		}
		seeds = append(seeds, b)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cat, s, opts := fuzzInput(data)
		actions, err := Plan(s, cat, opts)
		if err != nil {
			if actions != nil {
				t.Fatalf("Plan returned actions with its error %v", err)
			}
			return
		}
		after := Simulate(cat, actions)
		again, err := Plan(s, after, opts)
		if err != nil {
			t.Fatalf("re-plan after\n%s\nfails: %v", dumpSQL(actions), err)
		}
		if len(again) != 0 {
			t.Fatalf("plan\n%s\nre-plan is not empty:\n%s", dumpSQL(actions), dumpSQL(again))
		}
		mainActions, _ := splitStages(actions)
		targets, _, err := Targets(s, cat, Simulate(cat, mainActions), opts)
		if err != nil {
			t.Fatalf("Targets: %v", err)
		}
		src := &byteSource{b: data}
		for _, tg := range targets {
			dc := NewDBCatalog(tg.Name)
			dc.PublicSchema = src.flag()
			dc.PublicOwner = []string{"cloud_admin", tg.Owner, "pg_database_owner"}[src.next(3)]
			dc.WebAccess = src.flag()
			for _, r := range tg.DeleteRoles {
				if src.flag() {
					dc.RoleDeps[r] = true
					dc.TableGrants[r] = []TableGrant{{"public", "t", "x"}}
				}
			}
			if src.flag() {
				dc.Subscriptions = []string{"s1", `s "2"`}
			}
			dbActions, err := PlanDB(tg, dc)
			if err != nil {
				continue
			}
			if again, err := PlanDB(tg, SimulateDB(dc, dbActions)); err != nil || len(again) != 0 {
				t.Fatalf("database %q: re-plan after\n%s\n: %v\n%s", tg.Name, dumpSQL(dbActions), err, dumpSQL(again))
			}
		}
	})
}
