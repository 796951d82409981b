package apply

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
)

// DefaultPrivilegedRole is Neon's privileged role.
const DefaultPrivilegedRole = paths.DefaultPrivRole

// Phase names, as in Neon's compute_ctl, in its order. The per-database phases are in
// plandb.go.
const (
	PhaseCreatePrivilegedRole             = "CreatePrivilegedRole"
	PhaseDropInvalidDatabases             = "DropInvalidDatabases"
	PhaseRenameRoles                      = "RenameRoles"
	PhaseCreateAndAlterRoles              = "CreateAndAlterRoles"
	PhaseRenameAndDeleteDatabases         = "RenameAndDeleteDatabases"
	PhaseCreateAndAlterDatabases          = "CreateAndAlterDatabases"
	PhaseCreateSchemaNeon                 = "CreateSchemaNeon"
	PhaseHandleOtherExtensions            = "HandleOtherExtensions"
	PhaseHandleNeonExtension              = "HandleNeonExtension"
	PhaseCreateAvailabilityCheck          = "CreateAvailabilityCheck"
	PhaseDropRoles                        = "DropRoles"
	PhaseFinalizeDropLogicalSubscriptions = "FinalizeDropLogicalSubscriptions"
	PhaseHandleAudit                      = "HandleAudit"
)

// Options tune planning and execution.
type Options struct {
	// PrivilegedRole is the role spec roles are made members of; DefaultPrivilegedRole
	// when empty.
	PrivilegedRole string
	// Concurrency bounds the databases worked on at once. Zero means
	// StartupConcurrency(spec); a reconfiguration passes ReconfigureConcurrency(spec).
	Concurrency int
	// Neon is true in neon storage mode: the neon extension must then be available (as
	// in the reference, its absence is an error). Otherwise a missing neon extension
	// skips HandleNeonExtension with a log line.
	Neon bool
	// SystemDB is the "system database" that gets per-database work besides the spec's
	// databases, and whose settings carry pgaudit.log. Empty: the main connection's
	// database.
	SystemDB string
	// AdminRole receives what deleted roles own in the system database. Empty: the main
	// connection's user.
	AdminRole string
	// TimelineID is recorded in neon.drop_subscriptions_done. Empty: spec.timeline_id,
	// then the neon.timeline_id setting of the spec.
	TimelineID string
	// Connstr is used for per-database connections (its database replaced). Empty: the
	// main connection's configuration.
	Connstr string
	// SkipUnchanged: a database whose per-database work an earlier Apply completed, with
	// the same fingerprint (AppliedDBsTable), and that the main phases do not touch gets no
	// per-database work. A no-op re-apply then costs one catalog read instead of a
	// connection per database. Drift made by hand inside such a database (say, default
	// privileges revoked) is not undone; false does full work everywhere, and every
	// successful Apply records what it did either way.
	SkipUnchanged bool
	// Logger receives the plan and every action (nil: slog.Default()).
	Logger *slog.Logger
}

// Action is one SQL statement (or one short sequence of statements sent as one simple
// query, which Postgres runs in one implicit transaction).
type Action struct {
	Phase string
	// Database is where a per-database action runs; empty for the main connection.
	Database string
	SQL      string
	// Secret is set when SQL contains a password: it must run in a quiet session and
	// must never be logged.
	Secret bool
	// Describe is a log-safe description (never the password).
	Describe string

	redact []string
	// effect is what the action does to the catalog (Simulate, SimulateDB).
	effect   func(*Catalog)
	dbEffect func(*DBCatalog)
}

// String returns the log-safe description, so that printing an Action never prints SQL.
func (a Action) String() string {
	if a.Database != "" {
		return a.Phase + " [" + a.Database + "]: " + a.Describe
	}
	return a.Phase + ": " + a.Describe
}

// GoString keeps %#v log-safe too.
func (a Action) GoString() string { return "apply.Action{" + a.String() + "}" }

// LogValue keeps slog log-safe.
func (a Action) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("phase", a.Phase), slog.String("action", a.Describe)}
	if a.Database != "" {
		attrs = append(attrs, slog.String("database", a.Database))
	}
	return slog.GroupValue(attrs...)
}

// stage places a main-connection phase before or after the per-database work.
type stage int

const (
	stageMain  stage = iota // before the per-database work
	stageFinal              // after it
)

// phase is one step of Neon's order. Each reads and updates the planner's working
// catalog, so later phases see what earlier ones will have done.
type phase struct {
	name  string
	stage stage
	plan  func(p *planner) error
}

// phases in Neon's order (the main-connection steps of apply_spec_sql in
// compute_tools/src/spec_apply.rs; the per-database work runs between the two stages).
var phases = []phase{
	{PhaseCreatePrivilegedRole, stageMain, (*planner).createPrivilegedRole},
	{PhaseDropInvalidDatabases, stageMain, (*planner).dropInvalidDatabases},
	{PhaseRenameRoles, stageMain, (*planner).renameRoles},
	{PhaseCreateAndAlterRoles, stageMain, (*planner).createAndAlterRoles},
	{PhaseRenameAndDeleteDatabases, stageMain, (*planner).renameAndDeleteDatabases},
	{PhaseCreateAndAlterDatabases, stageMain, (*planner).createAndAlterDatabases},
	{PhaseCreateSchemaNeon, stageMain, (*planner).createSchemaNeon},
	{PhaseHandleOtherExtensions, stageFinal, (*planner).handleOtherExtensions},
	{PhaseHandleNeonExtension, stageFinal, (*planner).handleNeonExtension},
	{PhaseCreateAvailabilityCheck, stageFinal, (*planner).createAvailabilityCheck},
	{PhaseDropRoles, stageFinal, (*planner).dropRoles},
	{PhaseFinalizeDropLogicalSubscriptions, stageFinal, (*planner).finalizeDropSubscriptions},
	{PhaseHandleAudit, stageFinal, (*planner).handleAudit},
}

func phaseStage(name string) stage {
	for _, ph := range phases {
		if ph.name == name {
			return ph.stage
		}
	}
	return stageMain
}

// splitStages returns the actions before and after the per-database work.
func splitStages(actions []Action) (main, final []Action) {
	for i, a := range actions {
		if phaseStage(a.Phase) == stageFinal {
			return actions[:i], actions[i:]
		}
	}
	return actions, nil
}

type planner struct {
	spec    *spec.ComputeSpec
	opts    Options
	orig    *Catalog // as read
	cat     *Catalog // working copy
	priv    string
	admin   string
	system  string
	phase   string
	actions []Action

	deleteRoles []string // delete_role names, deduplicated, in delta order
}

// do records a and applies its effect to the working catalog.
func (p *planner) do(a Action, effect func(*Catalog)) {
	a.Phase = p.phase
	a.effect = effect
	if effect != nil {
		effect(p.cat)
	}
	p.actions = append(p.actions, a)
}

// Plan computes the main-connection statements that bring cat in line with s, in Neon's
// order: those that run before the per-database work, then those that run after it
// (splitStages). It does no I/O and does not change cat. Any problem in the spec fails
// the whole plan, so nothing is half-applied.
func Plan(s *spec.ComputeSpec, cat *Catalog, opts Options) ([]Action, error) {
	p, err := newPlanner(s, cat, opts)
	if err != nil {
		return nil, err
	}
	for _, ph := range phases {
		p.phase = ph.name
		if err := ph.plan(p); err != nil {
			return nil, fmt.Errorf("plan %s: %w", ph.name, err)
		}
	}
	return p.actions, nil
}

func newPlanner(s *spec.ComputeSpec, cat *Catalog, opts Options) (*planner, error) {
	if s == nil {
		return nil, errors.New("plan: no spec")
	}
	if cat == nil {
		cat = NewCatalog()
	}
	p := &planner{spec: s, opts: opts, orig: cat, cat: cat.clone()}
	p.priv = opts.PrivilegedRole
	if p.priv == "" {
		p.priv = DefaultPrivilegedRole
	}
	if err := checkName(p.priv); err != nil {
		return nil, fmt.Errorf("plan: privileged role: %w", err)
	}
	p.admin = firstNonEmpty(opts.AdminRole, cat.CurrentUser)
	p.system = firstNonEmpty(opts.SystemDB, cat.CurrentDatabase)
	if err := p.checkDeltas(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return p, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// checkDeltas validates the delta operations as a whole before any phase.
func (p *planner) checkDeltas() error {
	// A spec that lists a name twice with different wishes, or whose delta operations
	// undo each other, would change something on every apply.
	specRoles := map[string]spec.Role{}
	for _, r := range p.spec.Cluster.Roles {
		if prev, dup := specRoles[r.Name]; dup && !reflect.DeepEqual(prev, r) {
			return fmt.Errorf("role %q is listed twice with different passwords or options", r.Name)
		}
		specRoles[r.Name] = r
	}
	specDBs := map[string]string{}
	for _, d := range p.spec.Cluster.Databases {
		if prev, dup := specDBs[d.Name]; dup && prev != d.Owner {
			return fmt.Errorf("database %q is listed twice with different owners", d.Name)
		}
		specDBs[d.Name] = d.Owner
	}
	seen := map[string]bool{}
	roleSources := map[string]bool{} // rename_role sources so far
	dbGone := map[string]bool{}      // rename_db sources and delete_db names so far
	for i, d := range p.spec.DeltaOperations {
		switch d.Action {
		case spec.DeltaDeleteRole, spec.DeltaDeleteDB, spec.DeltaRenameRole, spec.DeltaRenameDB:
		default:
			continue // Neon ignores other actions
		}
		if err := checkName(d.Name); err != nil {
			return fmt.Errorf("delta operation %d (%s %q): %w", i, d.Action, d.Name, err)
		}
		if d.Action == spec.DeltaRenameRole || d.Action == spec.DeltaRenameDB {
			if d.NewName == nil {
				return fmt.Errorf("delta operation %d (%s %q): no new_name", i, d.Action, d.Name)
			}
			if err := checkName(*d.NewName); err != nil {
				return fmt.Errorf("delta operation %d (%s %q): new_name %q: %w", i, d.Action, d.Name, *d.NewName, err)
			}
		}
		switch d.Action {
		case spec.DeltaDeleteRole, spec.DeltaRenameRole:
			names := []string{d.Name}
			if d.NewName != nil {
				names = append(names, *d.NewName)
			}
			for _, n := range names {
				if n == p.priv || n == p.admin || strings.HasPrefix(n, "pg_") {
					return fmt.Errorf("delta operation %d (%s %q): role %q is reserved", i, d.Action, d.Name, n)
				}
			}
			if d.Action == spec.DeltaRenameRole {
				if _, ok := specRoles[d.Name]; ok {
					return fmt.Errorf("delta operation %d: role %q is renamed but also a spec role", i, d.Name)
				}
				if roleSources[*d.NewName] {
					return fmt.Errorf("delta operation %d: role %q is renamed to %q, a name an earlier rename gave up", i, d.Name, *d.NewName)
				}
				roleSources[d.Name] = true
			}
			if d.Action == spec.DeltaDeleteRole {
				if _, ok := specRoles[d.Name]; ok {
					return fmt.Errorf("delta operation %d: role %q is both a spec role and deleted", i, d.Name)
				}
				if !seen[d.Name] {
					seen[d.Name] = true
					p.deleteRoles = append(p.deleteRoles, d.Name)
				}
			}
		case spec.DeltaDeleteDB, spec.DeltaRenameDB:
			names := []string{d.Name}
			if d.NewName != nil {
				names = append(names, *d.NewName)
			}
			for _, n := range names {
				if n == p.cat.CurrentDatabase || n == p.system {
					return fmt.Errorf("delta operation %d (%s %q): database %q is the system database", i, d.Action, d.Name, n)
				}
			}
			if _, ok := specDBs[d.Name]; ok {
				return fmt.Errorf("delta operation %d (%s %q): database %q is also a spec database", i, d.Action, d.Name, d.Name)
			}
			if d.Action == spec.DeltaRenameDB && dbGone[*d.NewName] {
				return fmt.Errorf("delta operation %d: database %q is renamed to %q, a name an earlier operation removed", i, d.Name, *d.NewName)
			}
			dbGone[d.Name] = true
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (p *planner) createPrivilegedRole() error {
	if _, ok := p.cat.Roles[p.priv]; ok {
		return nil
	}
	priv := p.priv
	p.do(Action{
		SQL: "CREATE ROLE " + pg.Ident(priv) +
			" CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS IN ROLE pg_read_all_data, pg_write_all_data",
		Describe: "create privileged role " + pg.Ident(priv),
	}, func(c *Catalog) { c.Roles[priv] = CatalogRole{Name: priv} })
	return nil
}

func (p *planner) dropInvalidDatabases() error {
	for _, name := range sortedKeys(p.cat.Databases) {
		if !p.cat.Databases[name].Invalid {
			continue
		}
		p.do(Action{
			SQL:      "DROP DATABASE IF EXISTS " + pg.Ident(name),
			Describe: "drop invalid database " + pg.Ident(name),
		}, func(c *Catalog) { delete(c.Databases, name) })
	}
	return nil
}

// renameRoles renames old to new when old exists and new does not (the reference never
// renames: its condition is inverted). Both existing is an error; neither, or only the
// new name, means there is nothing to do.
func (p *planner) renameRoles() error {
	for _, d := range p.spec.DeltaOperations {
		if d.Action != spec.DeltaRenameRole {
			continue
		}
		from, to := d.Name, *d.NewName
		if from == to {
			continue
		}
		old, oldOK := p.cat.Roles[from]
		_, newOK := p.cat.Roles[to]
		switch {
		case oldOK && newOK:
			return fmt.Errorf("rename role %q to %q: both roles exist", from, to)
		case !oldOK:
			continue
		}
		p.do(Action{
			SQL:      "ALTER ROLE " + pg.Ident(from) + " RENAME TO " + pg.Ident(to),
			Describe: "rename role " + pg.Ident(from) + " to " + pg.Ident(to),
		}, func(c *Catalog) {
			delete(c.Roles, from)
			r := CatalogRole{Name: to, Password: old.Password}
			// Postgres clears an md5 password on rename: the role name is its salt.
			if r.Password != nil && strings.HasPrefix(*r.Password, "md5") {
				r.Password = nil
			}
			c.Roles[to] = r
			for k, db := range c.Databases {
				if db.Owner == from {
					db.Owner = to
					c.Databases[k] = db
				}
			}
		})
	}
	return nil
}

// defaultRoleAttrs are given to every role the spec creates (unless it is a JWKS role of
// local_proxy); a spec option on the same attribute replaces the default.
var defaultRoleAttrs = []struct{ attr, sql string }{
	{"inherit", "INHERIT"},
	{"createrole", "CREATEROLE"},
	{"createdb", "CREATEDB"},
	{"bypassrls", "BYPASSRLS"},
	{"replication", "REPLICATION"},
}

func (p *planner) jwksRoles() map[string]bool {
	out := map[string]bool{}
	if lp := p.spec.LocalProxyConfig; lp != nil {
		for _, j := range lp.JWKS {
			for _, r := range j.RoleNames {
				out[r] = true
			}
		}
	}
	return out
}

func (p *planner) createAndAlterRoles() error {
	jwks := p.jwksRoles()
	for _, r := range p.spec.Cluster.Roles {
		if err := checkName(r.Name); err != nil {
			return fmt.Errorf("role %q: %w", r.Name, err)
		}
		if strings.HasPrefix(r.Name, "pg_") {
			return fmt.Errorf("role %q: names starting with pg_ are reserved by Postgres", r.Name)
		}
		if r.Name == p.priv {
			return fmt.Errorf("role %q: is the privileged role and cannot be a spec role", r.Name)
		}
		// The admin role (or any superuser) as a spec role would get the spec's password
		// and could then log in over TCP as a superuser.
		if r.Name == p.admin || p.cat.Roles[r.Name].Superuser {
			return fmt.Errorf("role %q: is the admin role (a superuser) and cannot be a spec role", r.Name)
		}
		pw, err := rolePassword(r)
		if err != nil {
			return err
		}
		opts, err := renderOptions(fmt.Sprintf("role %q", r.Name), r.Options, roleOptionDefs)
		if err != nil {
			return err
		}
		// LOGIN is always added below; an explicit LOGIN is redundant and NOLOGIN would
		// contradict it (Postgres rejects both as conflicting).
		var optSQL []string
		overridden := map[string]bool{}
		for _, o := range opts {
			if o.attr == "login" {
				if o.key == "NOLOGIN" {
					return fmt.Errorf("role %q: option NOLOGIN contradicts LOGIN, which every spec role gets", r.Name)
				}
				continue
			}
			overridden[o.attr] = true
			optSQL = append(optSQL, o.sql)
		}
		name := pg.Ident(r.Name)
		tail := strings.Join(append(optSQL, "LOGIN", "PASSWORD "+pw.sql), " ")
		secret := pw.stored != nil
		roleName, stored := r.Name, pw.stored
		effect := func(c *Catalog) { c.Roles[roleName] = CatalogRole{Name: roleName, Password: stored} }

		existing, exists := p.cat.Roles[r.Name]
		switch {
		case exists && samePassword(existing.Password, pw.stored):
			continue
		case exists:
			p.do(Action{
				SQL:      "ALTER ROLE " + name + " " + tail,
				Secret:   secret,
				Describe: "alter role " + name + " (password changed)",
				redact:   pw.redact,
			}, effect)
		case jwks[r.Name]:
			p.do(Action{
				SQL:      "CREATE ROLE " + name + " " + tail,
				Secret:   secret,
				Describe: "create role " + name + " (local_proxy JWKS role)",
				redact:   pw.redact,
			}, effect)
		default:
			var attrs []string
			for _, d := range defaultRoleAttrs {
				if !overridden[d.attr] {
					attrs = append(attrs, d.sql)
				}
			}
			attrs = append(attrs, "IN ROLE "+pg.Ident(p.priv))
			p.do(Action{
				SQL:      "CREATE ROLE " + name + " " + strings.Join(attrs, " ") + " " + tail,
				Secret:   secret,
				Describe: "create role " + name,
				redact:   pw.redact,
			}, effect)
		}
	}
	return nil
}

// renameAndDeleteDatabases follows the delta order: delete_db clears the template flag
// if needed and drops WITH (FORCE); rename_db renames when the source exists.
func (p *planner) renameAndDeleteDatabases() error {
	for _, d := range p.spec.DeltaOperations {
		switch d.Action {
		case spec.DeltaDeleteDB:
			name := d.Name
			db, ok := p.cat.Databases[name]
			if !ok {
				continue
			}
			if db.IsTemplate {
				p.do(Action{
					SQL:      "ALTER DATABASE " + pg.Ident(name) + " IS_TEMPLATE false",
					Describe: "unset template flag of database " + pg.Ident(name) + " before dropping it",
				}, func(c *Catalog) {
					d := c.Databases[name]
					d.IsTemplate = false
					c.Databases[name] = d
				})
			}
			p.do(Action{
				SQL:      "DROP DATABASE IF EXISTS " + pg.Ident(name) + " WITH (FORCE)",
				Describe: "drop database " + pg.Ident(name),
			}, func(c *Catalog) { delete(c.Databases, name) })
		case spec.DeltaRenameDB:
			from, to := d.Name, *d.NewName
			if from == to {
				continue
			}
			if _, ok := p.cat.Databases[from]; !ok {
				continue
			}
			if _, ok := p.cat.Databases[to]; ok {
				return fmt.Errorf("rename database %q to %q: both databases exist", from, to)
			}
			p.do(Action{
				SQL:      "ALTER DATABASE " + pg.Ident(from) + " RENAME TO " + pg.Ident(to),
				Describe: "rename database " + pg.Ident(from) + " to " + pg.Ident(to),
			}, func(c *Catalog) {
				db := c.Databases[from]
				delete(c.Databases, from)
				db.Name = to
				c.Databases[to] = db
			})
		}
	}
	return nil
}

func (p *planner) createAndAlterDatabases() error {
	for _, db := range p.spec.Cluster.Databases {
		if err := checkName(db.Name); err != nil {
			return fmt.Errorf("database %q: %w", db.Name, err)
		}
		if err := checkName(db.Owner); err != nil {
			return fmt.Errorf("database %q: owner %q: %w", db.Name, db.Owner, err)
		}
		if _, ok := p.cat.Roles[db.Owner]; !ok {
			return fmt.Errorf("database %q: owner %q is neither a role of the spec nor an existing role", db.Name, db.Owner)
		}
		opts, err := renderOptions(fmt.Sprintf("database %q", db.Name), db.Options, databaseOptionDefs)
		if err != nil {
			return err
		}
		dbName, dbOwner := db.Name, db.Owner
		name, owner := pg.Ident(db.Name), pg.Ident(db.Owner)
		if existing, ok := p.cat.Databases[db.Name]; ok {
			if existing.Owner != db.Owner {
				p.do(Action{
					SQL:      "ALTER DATABASE " + name + " OWNER TO " + owner,
					Describe: "alter database " + name + " owner to " + owner,
				}, func(c *Catalog) {
					d := c.Databases[dbName]
					d.Owner = dbOwner
					c.Databases[dbName] = d
				})
			}
			continue
		}
		parts := []string{"CREATE DATABASE", name}
		for _, o := range opts {
			parts = append(parts, o.sql)
		}
		parts = append(parts, "OWNER", owner)
		var created CatalogDatabase
		created.Name, created.Owner = dbName, dbOwner
		for _, o := range opts {
			switch o.sql {
			case "IS_TEMPLATE true":
				created.IsTemplate = true
			case "ALLOW_CONNECTIONS false":
				created.RestrictConn = true
			}
		}
		p.do(Action{
			SQL:      strings.Join(parts, " "),
			Describe: "create database " + name + " owner " + owner,
		}, func(c *Catalog) { c.Databases[dbName] = created })
		p.do(Action{
			SQL:      "GRANT ALL PRIVILEGES ON DATABASE " + name + " TO " + pg.Ident(p.priv),
			Describe: "grant all privileges on database " + name + " to " + pg.Ident(p.priv),
		}, nil)
	}
	return nil
}

func (p *planner) createSchemaNeon() error {
	if p.cat.NeonSchema {
		return nil
	}
	p.do(Action{SQL: "CREATE SCHEMA IF NOT EXISTS neon", Describe: "create schema neon"},
		func(c *Catalog) { c.NeonSchema = true })
	return nil
}

// createExtension plans CREATE EXTENSION name when it is not installed; missing says why
// an unavailable extension is needed.
func (p *planner) createExtension(name, why string) error {
	if _, ok := p.cat.Extensions[name]; ok {
		return nil
	}
	version, ok := p.cat.Available[name]
	if !ok {
		return fmt.Errorf("%s needs extension %s, which is not available on this server", why, name)
	}
	p.do(Action{
		SQL:      "CREATE EXTENSION IF NOT EXISTS " + pg.Ident(name),
		Describe: "create extension " + name,
	}, func(c *Catalog) {
		c.Extensions[name] = CatalogExtension{Name: name, Schema: "public", Version: version}
	})
	return nil
}

func (p *planner) handleOtherExtensions() error {
	if !slices.Contains(p.cat.SharedPreloadLibraries, "pg_stat_statements") {
		return nil
	}
	return p.createExtension("pg_stat_statements", "shared_preload_libraries")
}

// NeonExtensionAvailable reports whether the server has the neon extension.
func NeonExtensionAvailable(cat *Catalog) bool {
	_, ok := cat.Available["neon"]
	return ok
}

// handleNeonExtension installs neon in schema neon at its default version. On a server
// without the extension it plans nothing (Apply logs the skip), unless Options.Neon.
func (p *planner) handleNeonExtension() error {
	version, ok := p.cat.Available["neon"]
	if !ok {
		if p.opts.Neon {
			return errors.New("extension neon is not available on this server (neon storage mode needs it)")
		}
		return nil
	}
	ext, installed := p.cat.Extensions["neon"]
	if !installed {
		p.do(Action{
			SQL:      "CREATE EXTENSION IF NOT EXISTS neon WITH SCHEMA neon",
			Describe: "create extension neon",
		}, func(c *Catalog) {
			c.Extensions["neon"] = CatalogExtension{Name: "neon", Schema: "neon", Version: version}
		})
		return nil
	}
	if ext.Schema != "neon" {
		p.do(Action{
			SQL: "UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname = 'neon'; " +
				"ALTER EXTENSION neon SET SCHEMA neon",
			Describe: "move extension neon to schema neon",
		}, func(c *Catalog) {
			e := c.Extensions["neon"]
			e.Schema = "neon"
			c.Extensions["neon"] = e
		})
	}
	if version != "" && ext.Version != version {
		p.do(Action{SQL: "ALTER EXTENSION neon UPDATE", Describe: "update extension neon"}, func(c *Catalog) {
			e := c.Extensions["neon"]
			e.Version = version
			c.Extensions["neon"] = e
		})
	}
	return nil
}

func (p *planner) createAvailabilityCheck() error {
	if p.cat.HealthCheck {
		return nil
	}
	p.do(Action{
		SQL: "CREATE TABLE IF NOT EXISTS public.health_check (id serial PRIMARY KEY, updated_at timestamptz DEFAULT now()); " +
			"INSERT INTO public.health_check (id, updated_at) VALUES (1, now()) " +
			"ON CONFLICT (id) DO UPDATE SET updated_at = now()",
		Describe: "create table health_check",
	}, func(c *Catalog) { c.HealthCheck = true })
	return nil
}

// dropRoles drops the deleted roles that exist. A deleted role that would still own a
// database fails the plan: DROP ROLE would fail after everything else ran.
func (p *planner) dropRoles() error {
	for _, name := range p.deleteRoles {
		if _, ok := p.cat.Roles[name]; !ok {
			continue
		}
		for _, db := range sortedKeys(p.cat.Databases) {
			if p.cat.Databases[db].Owner == name {
				return fmt.Errorf("role %q is deleted but owns database %q, which the spec neither deletes nor gives to another owner", name, db)
			}
		}
		p.do(Action{
			SQL:      "DROP ROLE IF EXISTS " + pg.Ident(name),
			Describe: "drop role " + pg.Ident(name),
		}, func(c *Catalog) { delete(c.Roles, name) })
	}
	return nil
}

// timelineID is the timeline drop_subscriptions_before_start is recorded for.
func (p *planner) timelineID() string {
	if p.opts.TimelineID != "" {
		return p.opts.TimelineID
	}
	if p.spec.TimelineID != nil && *p.spec.TimelineID != "" {
		return *p.spec.TimelineID
	}
	v, _ := p.spec.Cluster.Settings.Find("neon.timeline_id")
	return v
}

// dropSubscriptionsPending reports whether subscriptions are to be dropped now: the flag
// is set and this timeline has not done it. It reads the catalog as read, not as planned.
func (p *planner) dropSubscriptionsPending() bool {
	return p.spec.DropSubscriptionsBeforeStart && !p.orig.DropSubscriptionsDone[p.timelineID()]
}

func (p *planner) finalizeDropSubscriptions() error {
	if !p.dropSubscriptionsPending() {
		return nil
	}
	tl := p.timelineID()
	if tl == "" {
		return errors.New("drop_subscriptions_before_start needs a timeline id (spec timeline_id or setting neon.timeline_id)")
	}
	lit, err := pg.Literal(tl)
	if err != nil {
		return fmt.Errorf("timeline id: %w", err)
	}
	p.do(Action{
		SQL: "CREATE TABLE IF NOT EXISTS neon.drop_subscriptions_done (id serial PRIMARY KEY, timeline_id text); " +
			"INSERT INTO neon.drop_subscriptions_done (id, timeline_id) VALUES (1, " + lit + ") " +
			"ON CONFLICT (id) DO UPDATE SET timeline_id = EXCLUDED.timeline_id",
		Describe: "record subscriptions dropped for timeline " + lit,
	}, func(c *Catalog) { c.DropSubscriptionsDone = map[string]bool{tl: true} })
	return nil
}

const auditSetting = "pgaudit.log=none"

func (p *planner) handleAudit() error {
	var exts []string
	switch p.spec.AuditLogLevel.Level() {
	case spec.AuditDisabled:
		return nil
	case spec.AuditLog, spec.AuditBase:
		exts = []string{"pgaudit"}
	case spec.AuditHipaa, spec.AuditExtended, spec.AuditFull:
		exts = []string{"pgaudit", "pgauditlogtofile"}
	default:
		return fmt.Errorf("unknown audit_log_level %q", p.spec.AuditLogLevel)
	}
	why := "audit_log_level " + string(p.spec.AuditLogLevel)
	for _, e := range exts {
		if err := p.createExtension(e, why); err != nil {
			return err
		}
	}
	db, ok := p.cat.Databases[p.system]
	if !ok || slices.Contains(db.Settings, auditSetting) {
		return nil
	}
	system := p.system
	p.do(Action{
		SQL:      "ALTER DATABASE " + pg.Ident(system) + " SET pgaudit.log TO 'none'",
		Describe: "set pgaudit.log to none in database " + pg.Ident(system),
	}, func(c *Catalog) {
		d := c.Databases[system]
		d.Settings = append(slices.DeleteFunc(slices.Clone(d.Settings), func(s string) bool {
			return strings.HasPrefix(s, "pgaudit.log=")
		}), auditSetting)
		c.Databases[system] = d
	})
	return nil
}

// Simulate returns the catalog that executing actions on cat would leave, as far as the
// main-connection phases see it. cat is not changed.
func Simulate(cat *Catalog, actions []Action) *Catalog {
	out := cat.clone()
	for _, a := range actions {
		if a.effect != nil {
			a.effect(out)
		}
	}
	return out
}
