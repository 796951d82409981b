package apply

import (
	"fmt"
	"sort"
	"strings"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/jackc/pgx/v5"
)

// Per-database phase names (the per-database steps of apply_spec_sql,
// compute_tools/src/spec_apply.rs).
const (
	// PhaseDropSubscriptionsOfDeletedDatabases runs before the main phases in each
	// database that a delete_db operation drops: Postgres refuses to drop a database
	// that has subscriptions.
	PhaseDropSubscriptionsOfDeletedDatabases = "DropSubscriptionsOfDeletedDatabases"
	PhaseDeleteDBRoleReferences              = "DeleteDBRoleReferences"
	PhaseChangeSchemaPerms                   = "ChangeSchemaPerms"
	PhaseDropLogicalSubscriptions            = "DropLogicalSubscriptions"
)

// DBKind says which per-database phases a database gets.
type DBKind int

const (
	// DBUser is a database of the spec: every per-database phase.
	DBUser DBKind = iota
	// DBSystem is the system database: role references (given to the admin role) and
	// subscriptions, not the schema permissions.
	DBSystem
	// DBOther is any other connectable database that is not a template: role references
	// and subscriptions only (Neon leaves them alone, so a deleted role owning objects
	// there made DROP ROLE fail). Other databases are targets only while a deleted role
	// exists or subscriptions are to be dropped.
	DBOther
	// DBDropping is a database a delete_db operation drops: subscriptions only.
	DBDropping
)

func (k DBKind) String() string {
	switch k {
	case DBUser:
		return "user"
	case DBSystem:
		return "system"
	case DBOther:
		return "other"
	case DBDropping:
		return "dropping"
	}
	return "unknown"
}

// DBTarget is one database that gets per-database work.
type DBTarget struct {
	Name string
	Kind DBKind
	// Owner receives what deleted roles own here: the database owner, or the admin role
	// in the system database.
	Owner string
	// DeleteRoles are the delete_role names, in delta order.
	DeleteRoles []string
	// DropSubscriptions: drop this database's logical subscriptions.
	DropSubscriptions bool
	// PrivilegedRole gets default privileges in schema public.
	PrivilegedRole string
	// AdminRoles own a schema public that is to be given to the database owner.
	AdminRoles []string
}

// Skipped is a database of the spec that gets no per-database work, and why.
type Skipped struct {
	Name, Reason string
}

// Targets lists the databases that get per-database work after the main phases, given
// the catalog those phases leave (Simulate(cat, mainActions)) and the catalog as read
// before them (orig, for the drop_subscriptions_done record). Spec databases come first,
// in spec order, then the system database, then the others by name.
func Targets(s *spec.ComputeSpec, orig, after *Catalog, opts Options) ([]DBTarget, []Skipped, error) {
	p, err := newPlanner(s, orig, opts)
	if err != nil {
		return nil, nil, err
	}
	base := DBTarget{
		DeleteRoles:       p.deleteRoles,
		DropSubscriptions: p.dropSubscriptionsPending(),
		PrivilegedRole:    p.priv,
		AdminRoles:        uniq(p.admin, "cloud_admin", "zenith_admin"),
	}
	var out []DBTarget
	var skipped []Skipped
	seen := map[string]bool{}
	usable := func(name string) (CatalogDatabase, string) {
		db, ok := after.Databases[name]
		switch {
		case !ok:
			return db, "does not exist"
		case db.Invalid:
			return db, "is invalid"
		case db.RestrictConn:
			return db, "does not allow connections"
		}
		return db, ""
	}
	for _, d := range s.Cluster.Databases {
		if seen[d.Name] {
			continue
		}
		seen[d.Name] = true
		db, why := usable(d.Name)
		if why != "" {
			skipped = append(skipped, Skipped{Name: d.Name, Reason: why})
			continue
		}
		t := base
		t.Name, t.Kind, t.Owner = d.Name, DBUser, db.Owner
		out = append(out, t)
	}
	if p.system != "" && !seen[p.system] {
		seen[p.system] = true
		if _, why := usable(p.system); why == "" {
			t := base
			t.Name, t.Kind, t.Owner = p.system, DBSystem, p.admin
			out = append(out, t)
		}
	}
	others := base.DropSubscriptions
	for _, r := range p.deleteRoles {
		if _, ok := after.Roles[r]; ok {
			others = true
		}
	}
	if others {
		for _, name := range sortedKeys(after.Databases) {
			if seen[name] {
				continue
			}
			db, why := usable(name)
			if why != "" || db.IsTemplate {
				// A session in a template database makes CREATE DATABASE from it fail.
				continue
			}
			t := base
			t.Name, t.Kind, t.Owner = name, DBOther, db.Owner
			out = append(out, t)
		}
	}
	return out, skipped, nil
}

func uniq(vals ...string) []string {
	var out []string
	for _, v := range vals {
		if v != "" && !contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// droppingTargets lists the databases that delete_db operations will drop and that can
// be connected to, as read before the main phases.
func droppingTargets(s *spec.ComputeSpec, cat *Catalog) []DBTarget {
	var out []DBTarget
	seen := map[string]bool{}
	for _, d := range s.DeltaOperations {
		if d.Action != spec.DeltaDeleteDB || seen[d.Name] {
			continue
		}
		seen[d.Name] = true
		db, ok := cat.Databases[d.Name]
		if !ok || db.Invalid || db.RestrictConn {
			continue
		}
		out = append(out, DBTarget{Name: d.Name, Kind: DBDropping, Owner: db.Owner, DropSubscriptions: true})
	}
	return out
}

type dbPlanner struct {
	t       DBTarget
	cat     *DBCatalog
	phase   string
	actions []Action
}

func (p *dbPlanner) do(a Action, effect func(*DBCatalog)) {
	a.Phase = p.phase
	a.Database = p.t.Name
	a.dbEffect = effect
	if effect != nil {
		effect(p.cat)
	}
	p.actions = append(p.actions, a)
}

// PlanDB computes the statements to run inside database t.Name, from what ReadDBCatalog
// read there. It does no I/O and does not change cat.
func PlanDB(t DBTarget, cat *DBCatalog) ([]Action, error) {
	if cat == nil {
		cat = NewDBCatalog(t.Name)
	}
	p := &dbPlanner{t: t, cat: cat.clone()}
	type dbPhase struct {
		name string
		plan func() error
	}
	var list []dbPhase
	switch t.Kind {
	case DBDropping:
		list = []dbPhase{{PhaseDropSubscriptionsOfDeletedDatabases, p.dropSubscriptions}}
	case DBUser:
		list = []dbPhase{
			{PhaseDeleteDBRoleReferences, p.deleteRoleReferences},
			{PhaseChangeSchemaPerms, p.changeSchemaPerms},
			{PhaseDropLogicalSubscriptions, p.dropSubscriptions},
		}
	default:
		list = []dbPhase{
			{PhaseDeleteDBRoleReferences, p.deleteRoleReferences},
			{PhaseDropLogicalSubscriptions, p.dropSubscriptions},
		}
	}
	for _, ph := range list {
		p.phase = ph.name
		if err := ph.plan(); err != nil {
			return nil, fmt.Errorf("plan %s in database %q: %w", ph.name, t.Name, err)
		}
	}
	return p.actions, nil
}

// deleteRoleReferences gives what a deleted role owns here to the target's owner, revokes
// the table privileges other roles granted it (DROP OWNED BY, run by a superuser, only
// revokes those the owners granted), then drops what remains. A database owned by the
// role itself is left alone: Plan refuses a spec that would keep such a database.
func (p *dbPlanner) deleteRoleReferences() error {
	for _, role := range p.t.DeleteRoles {
		if !p.cat.RoleDeps[role] || role == p.t.Owner {
			continue
		}
		r := pg.Ident(role)
		if p.t.Owner == "" {
			return fmt.Errorf("role %q owns objects here but the database has no owner to give them to", role)
		}
		p.do(Action{
			SQL:      "REASSIGN OWNED BY " + r + " TO " + pg.Ident(p.t.Owner),
			Describe: "reassign objects owned by " + r + " to " + pg.Ident(p.t.Owner),
		}, nil)
		// Per grantor, on the tables it granted on (not ON ALL TABLES IN SCHEMA, as the
		// reference does: that fails on any table the grantor has no privilege on).
		var grantors []string
		tables := map[string][]string{}
		for _, g := range p.cat.TableGrants[role] {
			if _, ok := tables[g.Grantor]; !ok {
				grantors = append(grantors, g.Grantor)
			}
			tables[g.Grantor] = append(tables[g.Grantor], pgx.Identifier{g.Schema, g.Table}.Sanitize())
		}
		for _, g := range grantors {
			p.do(Action{
				SQL: "SET LOCAL ROLE " + pg.Ident(g) + "; REVOKE ALL PRIVILEGES ON TABLE " +
					strings.Join(tables[g], ", ") + " FROM " + r + " GRANTED BY " + pg.Ident(g),
				Describe: fmt.Sprintf("revoke privileges granted by %s to %s on %d tables", pg.Ident(g), r, len(tables[g])),
			}, nil)
		}
		p.do(Action{
			SQL:      "DROP OWNED BY " + r,
			Describe: "drop objects owned by " + r,
		}, func(c *DBCatalog) {
			delete(c.RoleDeps, role)
			delete(c.TableGrants, role)
			delete(c.PublicCreate, role)
			for d := range c.DefaultPrivileges {
				if d.Grantee == role {
					delete(c.DefaultPrivileges, d)
				}
			}
		})
	}
	return nil
}

// Privileges that GRANT ALL gives on tables and sequences (PostgreSQL 15).
var (
	allTablePrivileges    = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
	allSequencePrivileges = []string{"SELECT", "UPDATE", "USAGE"}
)

// changeSchemaPerms: schema public owned by an admin role goes to the database owner;
// web_access may create in public; the privileged role gets all privileges, with grant
// option, on the tables and sequences the admin role creates in public.
func (p *dbPlanner) changeSchemaPerms() error {
	if !p.cat.PublicSchema {
		return nil
	}
	if contains(p.t.AdminRoles, p.cat.PublicOwner) && p.cat.PublicOwner != p.t.Owner && p.t.Owner != "" {
		owner := p.t.Owner
		p.do(Action{
			SQL:      "ALTER SCHEMA public OWNER TO " + pg.Ident(owner),
			Describe: "give schema public to " + pg.Ident(owner),
		}, func(c *DBCatalog) { c.PublicOwner = owner })
	}
	if p.cat.WebAccess && !p.cat.PublicCreate["web_access"] {
		p.do(Action{
			SQL:      "GRANT CREATE ON SCHEMA public TO web_access",
			Describe: "grant create on schema public to web_access",
		}, func(c *DBCatalog) { c.PublicCreate["web_access"] = true })
	}
	priv := p.t.PrivilegedRole
	if priv == "" {
		return nil
	}
	for _, k := range []struct {
		objType, sqlName string
		privs            []string
	}{{"r", "TABLES", allTablePrivileges}, {"S", "SEQUENCES", allSequencePrivileges}} {
		complete := true
		for _, pr := range k.privs {
			if !p.cat.DefaultPrivileges[DefaultPrivilege{ObjType: k.objType, Grantee: priv, Privilege: pr}] {
				complete = false
			}
		}
		if complete {
			continue
		}
		objType, privs := k.objType, k.privs
		p.do(Action{
			SQL:      "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON " + k.sqlName + " TO " + pg.Ident(priv) + " WITH GRANT OPTION",
			Describe: "default privileges on " + k.sqlName + " in schema public for " + pg.Ident(priv),
		}, func(c *DBCatalog) {
			for _, pr := range privs {
				c.DefaultPrivileges[DefaultPrivilege{ObjType: objType, Grantee: priv, Privilege: pr}] = true
			}
		})
	}
	return nil
}

// dropSubscriptions disables each subscription, detaches its slot (so that dropping does
// not contact the publisher) and drops it.
func (p *dbPlanner) dropSubscriptions() error {
	if !p.t.DropSubscriptions {
		return nil
	}
	subs := append([]string(nil), p.cat.Subscriptions...)
	sort.Strings(subs)
	for _, s := range subs {
		name := pg.Ident(s)
		sub := s
		p.do(Action{SQL: "ALTER SUBSCRIPTION " + name + " DISABLE", Describe: "disable subscription " + name}, nil)
		p.do(Action{SQL: "ALTER SUBSCRIPTION " + name + " SET (slot_name = NONE)", Describe: "detach slot of subscription " + name}, nil)
		p.do(Action{SQL: "DROP SUBSCRIPTION " + name, Describe: "drop subscription " + name}, func(c *DBCatalog) {
			c.Subscriptions = removeString(c.Subscriptions, sub)
		})
	}
	return nil
}

func removeString(list []string, v string) []string {
	var out []string
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// SimulateDB returns the per-database catalog that executing actions on cat would leave.
func SimulateDB(cat *DBCatalog, actions []Action) *DBCatalog {
	out := cat.clone()
	for _, a := range actions {
		if a.dbEffect != nil {
			a.dbEffect(out)
		}
	}
	return out
}
