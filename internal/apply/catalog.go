// Package apply brings the roles, databases and per-database state of a running Postgres
// in line with a ComputeSpec, following every phase of Neon's compute_ctl in its order
// (apply_spec_sql in compute_tools/src/spec_apply.rs). It separates reading, planning and executing:
//
//   - ReadCatalog reads what exists on the main connection (one snapshot, before anything
//     changes); ReadDBCatalog reads the per-database facts inside one database;
//   - Plan and PlanDB, pure functions, turn spec + catalog into ordered Actions, or refuse
//     the whole spec before anything runs; Simulate and SimulateDB apply the planned
//     effects to a catalog, so that planning again yields nothing (idempotence);
//   - Execute runs actions in order on one connection, quietly (no server logging) from the
//     first action that carries a password, and stops at the first error; Apply runs the
//     whole sequence, the per-database work in parallel under a concurrency limit.
//
// Phases are listed in one table (phases in plan.go, dbPhases in plandb.go). Every phase
// is planned only when the catalog shows it is needed, so a no-op re-apply runs nothing.
package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Catalog is the part of the server's catalog (seen from the main connection) that
// planning looks at.
type Catalog struct {
	Roles     map[string]CatalogRole
	Databases map[string]CatalogDatabase

	// CurrentDatabase and CurrentUser are those of the connection that read the catalog:
	// the "system DB" and the admin role by default.
	CurrentDatabase string
	CurrentUser     string
	// NeonSchema: schema neon exists in the current database.
	NeonSchema bool
	// HealthCheck: a table named health_check exists in the current database.
	HealthCheck bool
	// Extensions installed in the current database, by name.
	Extensions map[string]CatalogExtension
	// Available extensions (pg_available_extensions): name -> default version.
	Available map[string]string
	// SharedPreloadLibraries is the server setting, split.
	SharedPreloadLibraries []string
	// DropSubscriptionsDone holds the timeline ids recorded in
	// neon.drop_subscriptions_done.
	DropSubscriptionsDone map[string]bool
	// AppliedDBs holds, per database, the fingerprint of the per-database work that an
	// earlier Apply completed there (AppliedDBsTable).
	AppliedDBs map[string]string
}

// CatalogRole is an existing role.
type CatalogRole struct {
	Name string
	// Password is pg_authid.rolpassword as stored: "md5" + 32 hex digits, a SCRAM-SHA-256
	// verifier, or nil.
	Password *string
	// Superuser is pg_authid.rolsuper.
	Superuser bool
}

// CatalogDatabase is an existing database.
type CatalogDatabase struct {
	Name  string
	OID   uint32
	Owner string
	// RestrictConn is NOT datallowconn.
	RestrictConn bool
	// Invalid marks a database whose DROP was interrupted (datconnlimit = -2).
	Invalid bool
	// IsTemplate is datistemplate (such a database cannot be dropped).
	IsTemplate bool
	// Settings are the database's own settings (ALTER DATABASE … SET), "name=value".
	Settings []string
}

// CatalogExtension is an installed extension.
type CatalogExtension struct {
	Name, Schema, Version string
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{
		Roles:                 map[string]CatalogRole{},
		Databases:             map[string]CatalogDatabase{},
		Extensions:            map[string]CatalogExtension{},
		Available:             map[string]string{},
		DropSubscriptionsDone: map[string]bool{},
		AppliedDBs:            map[string]string{},
	}
}

func (c *Catalog) clone() *Catalog {
	out := *c
	out.Roles = cloneMap(c.Roles)
	out.Databases = make(map[string]CatalogDatabase, len(c.Databases))
	for k, v := range c.Databases {
		v.Settings = append([]string(nil), v.Settings...)
		out.Databases[k] = v
	}
	out.Extensions = cloneMap(c.Extensions)
	out.Available = cloneMap(c.Available)
	out.DropSubscriptionsDone = cloneMap(c.DropSubscriptionsDone)
	out.AppliedDBs = cloneMap(c.AppliedDBs)
	out.SharedPreloadLibraries = append([]string(nil), c.SharedPreloadLibraries...)
	return &out
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Querier is the part of *pgx.Conn (or pgx.Tx) that ReadCatalog and ReadDBCatalog need.
type Querier interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// read is one catalog query and what to do with each of its rows.
type read struct {
	what, sql string
	scan      func(pgx.Rows) error
}

// readAll runs the queries in one pipeline (one batch: two round trips, however many
// queries, instead of two per query on a fresh connection) and scans their rows in order.
func readAll(ctx context.Context, q Querier, reads []read) error {
	b := &pgx.Batch{}
	for _, r := range reads {
		b.Queue(r.sql)
	}
	br := q.SendBatch(ctx, b)
	for _, r := range reads {
		if err := scanRows(br, r); err != nil {
			br.Close()
			return err
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("read catalog: %w", err)
	}
	return nil
}

func scanRows(br pgx.BatchResults, r read) error {
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("read %s: %w", r.what, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := r.scan(rows); err != nil {
			return fmt.Errorf("read %s: %w", r.what, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", r.what, err)
	}
	return nil
}

// AppliedDBsTable records, in the system database, the fingerprint of the per-database
// work each database last got (see Options.SkipUnchanged). It lives beside the data it
// describes, so it follows the cluster wherever its storage goes: across restarts of a
// standalone compute, and in neon mode across computes, branches and restores, where
// PGDATA itself is fresh at every start.
const AppliedDBsTable = "neon.compute_apply_dbs"

const (
	rolesQuery     = `SELECT rolname, rolpassword, rolsuper FROM pg_catalog.pg_authid`
	databasesQuery = `SELECT d.datname, d.oid, pg_catalog.pg_get_userbyid(d.datdba), NOT d.datallowconn,
		d.datconnlimit = -2, d.datistemplate,
		COALESCE((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
			WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}')
		FROM pg_catalog.pg_database d`
	sessionQuery = `SELECT pg_catalog.current_database(), current_user,
		EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'neon'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = 'health_check'),
		pg_catalog.current_setting('shared_preload_libraries'),
		pg_catalog.to_regclass('neon.drop_subscriptions_done') IS NOT NULL,
		pg_catalog.to_regclass('` + AppliedDBsTable + `') IS NOT NULL`
	extensionsQuery = `SELECT e.extname, n.nspname, e.extversion
		FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace`
	availableQuery  = `SELECT name, COALESCE(default_version, '') FROM pg_catalog.pg_available_extensions`
	subsDoneQuery   = `SELECT COALESCE(timeline_id, '') FROM neon.drop_subscriptions_done`
	appliedDBsQuery = `SELECT datname, fingerprint FROM ` + AppliedDBsTable
	databaseOIDs    = `SELECT datname, oid FROM pg_catalog.pg_database`
)

// ReadCatalog reads roles (with their stored passwords, so it needs a superuser),
// databases and the facts of the current database that the main phases look at.
func ReadCatalog(ctx context.Context, q Querier) (*Catalog, error) {
	cat := NewCatalog()
	var preload string
	var subsTable, appliedTable bool
	err := readAll(ctx, q, []read{
		{"roles", rolesQuery, func(rows pgx.Rows) error {
			var r CatalogRole
			if err := rows.Scan(&r.Name, &r.Password, &r.Superuser); err != nil {
				return err
			}
			cat.Roles[r.Name] = r
			return nil
		}},
		{"databases", databasesQuery, func(rows pgx.Rows) error {
			var d CatalogDatabase
			if err := rows.Scan(&d.Name, &d.OID, &d.Owner, &d.RestrictConn, &d.Invalid, &d.IsTemplate, &d.Settings); err != nil {
				return err
			}
			cat.Databases[d.Name] = d
			return nil
		}},
		{"session", sessionQuery, func(rows pgx.Rows) error {
			return rows.Scan(&cat.CurrentDatabase, &cat.CurrentUser, &cat.NeonSchema, &cat.HealthCheck, &preload, &subsTable, &appliedTable)
		}},
		{"extensions", extensionsQuery, func(rows pgx.Rows) error {
			var e CatalogExtension
			if err := rows.Scan(&e.Name, &e.Schema, &e.Version); err != nil {
				return err
			}
			cat.Extensions[e.Name] = e
			return nil
		}},
		{"available extensions", availableQuery, func(rows pgx.Rows) error {
			var name, version string
			if err := rows.Scan(&name, &version); err != nil {
				return err
			}
			cat.Available[name] = version
			return nil
		}},
	})
	if err != nil {
		return nil, err
	}
	cat.SharedPreloadLibraries = splitLibraries(preload)
	var more []read
	if subsTable {
		more = append(more, read{"drop_subscriptions_done", subsDoneQuery, func(rows pgx.Rows) error {
			var tl string
			if err := rows.Scan(&tl); err != nil {
				return err
			}
			cat.DropSubscriptionsDone[tl] = true
			return nil
		}})
	}
	if appliedTable {
		more = append(more, read{AppliedDBsTable, appliedDBsQuery, func(rows pgx.Rows) error {
			var db, fp string
			if err := rows.Scan(&db, &fp); err != nil {
				return err
			}
			cat.AppliedDBs[db] = fp
			return nil
		}})
	}
	if len(more) > 0 {
		if err := readAll(ctx, q, more); err != nil {
			return nil, err
		}
	}
	return cat, nil
}

// readDatabaseOIDs reads the OID of every database (after the main phases created some).
func readDatabaseOIDs(ctx context.Context, q Querier) (map[string]uint32, error) {
	out := map[string]uint32{}
	err := readAll(ctx, q, []read{{"database oids", databaseOIDs, func(rows pgx.Rows) error {
		var name string
		var oid uint32
		if err := rows.Scan(&name, &oid); err != nil {
			return err
		}
		out[name] = oid
		return nil
	}}})
	return out, err
}

// splitLibraries splits a shared_preload_libraries value.
func splitLibraries(s string) []string {
	var out []string
	for _, l := range strings.Split(s, ",") {
		l = strings.Trim(strings.TrimSpace(l), `"`)
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// DBCatalog holds the facts of one database that the per-database phases look at. It is
// read inside that database (ReadDBCatalog).
type DBCatalog struct {
	Name string
	// RoleDeps holds the roles that own objects or hold privileges in this database
	// (pg_shdepend rows of this database).
	RoleDeps map[string]bool
	// TableGrants lists, per grantee, the grants on tables that another role made
	// (DROP OWNED BY does not revoke those).
	TableGrants map[string][]TableGrant
	// PublicSchema: schema public exists; PublicOwner is its owner.
	PublicSchema bool
	PublicOwner  string
	// PublicCreate holds the roles granted CREATE on schema public.
	PublicCreate map[string]bool
	// DefaultPrivileges holds the grantable default privileges that the current user set
	// in schema public.
	DefaultPrivileges map[DefaultPrivilege]bool
	// Subscriptions are the logical subscriptions of this database.
	Subscriptions []string
	// WebAccess: a role named web_access exists.
	WebAccess bool
}

// TableGrant is a table on which a role (Grantor) granted privileges to one grantee.
type TableGrant struct {
	Schema, Table, Grantor string
}

// DefaultPrivilege is one grantable privilege of pg_default_acl in schema public.
type DefaultPrivilege struct {
	// ObjType is pg_default_acl.defaclobjtype: "r" tables, "S" sequences.
	ObjType   string
	Grantee   string
	Privilege string
}

// NewDBCatalog returns an empty per-database catalog.
func NewDBCatalog(name string) *DBCatalog {
	return &DBCatalog{
		Name:              name,
		RoleDeps:          map[string]bool{},
		TableGrants:       map[string][]TableGrant{},
		PublicCreate:      map[string]bool{},
		DefaultPrivileges: map[DefaultPrivilege]bool{},
	}
}

func (c *DBCatalog) clone() *DBCatalog {
	out := *c
	out.RoleDeps = cloneMap(c.RoleDeps)
	out.TableGrants = make(map[string][]TableGrant, len(c.TableGrants))
	for k, v := range c.TableGrants {
		out.TableGrants[k] = append([]TableGrant(nil), v...)
	}
	out.PublicCreate = cloneMap(c.PublicCreate)
	out.DefaultPrivileges = cloneMap(c.DefaultPrivileges)
	out.Subscriptions = append([]string(nil), c.Subscriptions...)
	return &out
}

const (
	dbSessionQuery = `SELECT pg_catalog.current_database(),
		EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'web_access')`
	dbRoleDepsQuery = `SELECT DISTINCT a.rolname
		FROM pg_catalog.pg_shdepend d JOIN pg_catalog.pg_authid a ON a.oid = d.refobjid
		WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
		  AND d.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())`
	dbTableGrantsQuery = `SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee), n.nspname, c.relname, pg_catalog.pg_get_userbyid(a.grantor)
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
		     pg_catalog.aclexplode(c.relacl) a
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.grantee <> 0 AND a.grantor <> a.grantee
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		ORDER BY 1, 4, 2, 3`
	dbPublicQuery       = `SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname = 'public'`
	dbPublicCreateQuery = `SELECT pg_catalog.pg_get_userbyid(a.grantee)
		FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
		WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee <> 0`
	dbDefaultACLQuery = `SELECT d.defaclobjtype::text, pg_catalog.pg_get_userbyid(a.grantee), a.privilege_type
		FROM pg_catalog.pg_default_acl d JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace,
		     pg_catalog.aclexplode(d.defaclacl) a
		WHERE n.nspname = 'public' AND a.is_grantable AND a.grantee <> 0
		  AND d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)`
	dbSubscriptionsQuery = `SELECT subname FROM pg_catalog.pg_subscription
		WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
		ORDER BY subname`
)

// ReadDBCatalog reads the per-database facts of the database q is connected to. It needs a
// superuser (pg_authid, pg_subscription).
func ReadDBCatalog(ctx context.Context, q Querier) (*DBCatalog, error) {
	c := NewDBCatalog("")
	err := readAll(ctx, q, []read{
		{"session", dbSessionQuery, func(r pgx.Rows) error { return r.Scan(&c.Name, &c.WebAccess) }},
		{"role dependencies", dbRoleDepsQuery, func(r pgx.Rows) error {
			var n string
			err := r.Scan(&n)
			c.RoleDeps[n] = true
			return err
		}},
		{"table grants", dbTableGrantsQuery, func(r pgx.Rows) error {
			var grantee string
			var g TableGrant
			err := r.Scan(&grantee, &g.Schema, &g.Table, &g.Grantor)
			c.TableGrants[grantee] = append(c.TableGrants[grantee], g)
			return err
		}},
		{"schema public", dbPublicQuery, func(r pgx.Rows) error {
			c.PublicSchema = true
			return r.Scan(&c.PublicOwner)
		}},
		{"schema public grants", dbPublicCreateQuery, func(r pgx.Rows) error {
			var n string
			err := r.Scan(&n)
			c.PublicCreate[n] = true
			return err
		}},
		{"default privileges", dbDefaultACLQuery, func(r pgx.Rows) error {
			var d DefaultPrivilege
			err := r.Scan(&d.ObjType, &d.Grantee, &d.Privilege)
			c.DefaultPrivileges[d] = true
			return err
		}},
		{"subscriptions", dbSubscriptionsQuery, func(r pgx.Rows) error {
			var n string
			err := r.Scan(&n)
			c.Subscriptions = append(c.Subscriptions, n)
			return err
		}},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
