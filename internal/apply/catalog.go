// Package apply brings the roles and databases of a running Postgres in line with a
// ComputeSpec, following the order of Neon's compute_ctl (inventory §6.3). It works in
// three steps that a caller can also run separately:
//
//   - ReadCatalog reads what exists (one snapshot, before anything changes);
//   - Plan, a pure function, turns spec + catalog into an ordered list of Actions, or
//     refuses the whole spec before anything runs;
//   - Execute runs the actions in order on one connection, quietly (no server logging)
//     from the first action that carries a password, and stops at the first error.
//
// Phases are listed in one table (phases in plan.go) so later phases (renames, drops,
// per-database work, extensions) slot in at their place in Neon's order.
package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Catalog is the part of the server's catalog that planning looks at.
type Catalog struct {
	Roles     map[string]CatalogRole
	Databases map[string]CatalogDatabase
}

// CatalogRole is an existing role.
type CatalogRole struct {
	Name string
	// Password is pg_authid.rolpassword as stored: "md5" + 32 hex digits, a SCRAM-SHA-256
	// verifier, or nil.
	Password *string
}

// CatalogDatabase is an existing database.
type CatalogDatabase struct {
	Name  string
	Owner string
	// RestrictConn is NOT datallowconn.
	RestrictConn bool
	// Invalid marks a database whose DROP was interrupted (datconnlimit = -2).
	Invalid bool
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{Roles: map[string]CatalogRole{}, Databases: map[string]CatalogDatabase{}}
}

func (c *Catalog) clone() *Catalog {
	out := NewCatalog()
	for k, v := range c.Roles {
		out.Roles[k] = v
	}
	for k, v := range c.Databases {
		out.Databases[k] = v
	}
	return out
}

// Querier is the part of *pgx.Conn that ReadCatalog needs.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

const (
	rolesQuery     = `SELECT rolname, rolpassword FROM pg_catalog.pg_authid`
	databasesQuery = `SELECT datname, pg_catalog.pg_get_userbyid(datdba), NOT datallowconn, datconnlimit = -2
		FROM pg_catalog.pg_database`
)

// ReadCatalog reads roles (with their stored passwords, so it needs a superuser) and
// databases.
func ReadCatalog(ctx context.Context, q Querier) (*Catalog, error) {
	cat := NewCatalog()
	rows, err := q.Query(ctx, rolesQuery)
	if err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	for rows.Next() {
		var r CatalogRole
		if err := rows.Scan(&r.Name, &r.Password); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read roles: %w", err)
		}
		cat.Roles[r.Name] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	rows, err = q.Query(ctx, databasesQuery)
	if err != nil {
		return nil, fmt.Errorf("read databases: %w", err)
	}
	for rows.Next() {
		var d CatalogDatabase
		if err := rows.Scan(&d.Name, &d.Owner, &d.RestrictConn, &d.Invalid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read databases: %w", err)
		}
		cat.Databases[d.Name] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read databases: %w", err)
	}
	return cat, nil
}
