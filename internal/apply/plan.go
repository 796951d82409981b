package apply

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
)

// DefaultPrivilegedRole is Neon's privileged role.
const DefaultPrivilegedRole = "neon_superuser"

// Phase names, as in Neon's compute_ctl.
const (
	PhaseCreatePrivilegedRole    = "CreatePrivilegedRole"
	PhaseCreateAndAlterRoles     = "CreateAndAlterRoles"
	PhaseCreateAndAlterDatabases = "CreateAndAlterDatabases"
)

// Options tune planning.
type Options struct {
	// PrivilegedRole is the role spec roles are made members of; DefaultPrivilegedRole
	// when empty.
	PrivilegedRole string
}

// Action is one SQL statement to run.
type Action struct {
	Phase string
	SQL   string
	// Secret is set when SQL contains a password: it must run in a quiet session and
	// must never be logged.
	Secret bool
	// Describe is a log-safe description (never the password).
	Describe string

	redact []string
}

// String returns the log-safe description, so that printing an Action never prints SQL.
func (a Action) String() string { return a.Phase + ": " + a.Describe }

// GoString keeps %#v log-safe too.
func (a Action) GoString() string { return "apply.Action{" + a.String() + "}" }

// LogValue keeps slog log-safe.
func (a Action) LogValue() slog.Value {
	return slog.GroupValue(slog.String("phase", a.Phase), slog.String("action", a.Describe))
}

// phase is one step of Neon's order. Each reads and updates the planner's working
// catalog, so later phases see what earlier ones will have created.
type phase struct {
	name string
	plan func(p *planner) error
}

// phases in Neon's order (inventory §6.3 step 4). Later issues insert DropInvalidDatabases
// and RenameRoles after CreatePrivilegedRole, RenameAndDeleteDatabases before
// CreateAndAlterDatabases, and the per-database and final phases after it.
var phases = []phase{
	{PhaseCreatePrivilegedRole, (*planner).createPrivilegedRole},
	{PhaseCreateAndAlterRoles, (*planner).createAndAlterRoles},
	{PhaseCreateAndAlterDatabases, (*planner).createAndAlterDatabases},
}

type planner struct {
	spec    *spec.ComputeSpec
	cat     *Catalog // working copy
	priv    string
	phase   string
	actions []Action
}

func (p *planner) add(a Action) {
	a.Phase = p.phase
	p.actions = append(p.actions, a)
}

// Plan computes the statements that bring cat in line with s. It does no I/O and does
// not change cat. Any problem in the spec fails the whole plan, so nothing is half-applied.
func Plan(s *spec.ComputeSpec, cat *Catalog, opts Options) ([]Action, error) {
	if s == nil {
		return nil, errors.New("plan: no spec")
	}
	if cat == nil {
		cat = NewCatalog()
	}
	priv := opts.PrivilegedRole
	if priv == "" {
		priv = DefaultPrivilegedRole
	}
	if err := checkName(priv); err != nil {
		return nil, fmt.Errorf("plan: privileged role: %w", err)
	}
	p := &planner{spec: s, cat: cat.clone(), priv: priv}
	for _, ph := range phases {
		p.phase = ph.name
		if err := ph.plan(p); err != nil {
			return nil, fmt.Errorf("plan %s: %w", ph.name, err)
		}
	}
	return p.actions, nil
}

func (p *planner) createPrivilegedRole() error {
	if _, ok := p.cat.Roles[p.priv]; ok {
		return nil
	}
	p.add(Action{
		SQL: "CREATE ROLE " + pg.Ident(p.priv) +
			" CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS IN ROLE pg_read_all_data, pg_write_all_data",
		Describe: "create privileged role " + pg.Ident(p.priv),
	})
	p.cat.Roles[p.priv] = CatalogRole{Name: p.priv}
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

		existing, exists := p.cat.Roles[r.Name]
		switch {
		case exists && samePassword(existing.Password, pw.stored):
			continue
		case exists:
			p.add(Action{
				SQL:      "ALTER ROLE " + name + " " + tail,
				Secret:   secret,
				Describe: "alter role " + name + " (password changed)",
				redact:   pw.redact,
			})
		case jwks[r.Name]:
			p.add(Action{
				SQL:      "CREATE ROLE " + name + " " + tail,
				Secret:   secret,
				Describe: "create role " + name + " (local_proxy JWKS role)",
				redact:   pw.redact,
			})
		default:
			var attrs []string
			for _, d := range defaultRoleAttrs {
				if !overridden[d.attr] {
					attrs = append(attrs, d.sql)
				}
			}
			attrs = append(attrs, "IN ROLE "+pg.Ident(p.priv))
			p.add(Action{
				SQL:      "CREATE ROLE " + name + " " + strings.Join(attrs, " ") + " " + tail,
				Secret:   secret,
				Describe: "create role " + name,
				redact:   pw.redact,
			})
		}
		p.cat.Roles[r.Name] = CatalogRole{Name: r.Name, Password: pw.stored}
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
		name, owner := pg.Ident(db.Name), pg.Ident(db.Owner)
		if existing, ok := p.cat.Databases[db.Name]; ok {
			if existing.Owner != db.Owner {
				p.add(Action{
					SQL:      "ALTER DATABASE " + name + " OWNER TO " + owner,
					Describe: "alter database " + name + " owner to " + owner,
				})
				existing.Owner = db.Owner
				p.cat.Databases[db.Name] = existing
			}
			continue
		}
		parts := []string{"CREATE DATABASE", name}
		for _, o := range opts {
			parts = append(parts, o.sql)
		}
		parts = append(parts, "OWNER", owner)
		p.add(Action{
			SQL:      strings.Join(parts, " "),
			Describe: "create database " + name + " owner " + owner,
		})
		p.add(Action{
			SQL:      "GRANT ALL PRIVILEGES ON DATABASE " + name + " TO " + pg.Ident(p.priv),
			Describe: "grant all privileges on database " + name + " to " + pg.Ident(p.priv),
		})
		p.cat.Databases[db.Name] = CatalogDatabase{Name: db.Name, Owner: db.Owner}
	}
	return nil
}
