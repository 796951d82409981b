package migrations

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// PG16 is server_version_num of PostgreSQL 16.0, the minimum for the migrations that use
// roles and functions PostgreSQL 15 does not have.
const PG16 = 160000

// Migration is one entry of the append-only list.
type Migration struct {
	// ID is the value neon_migration.migration_id.id takes once the entry has run; entries
	// are numbered 1, 2, 3, … in list order, as in Neon's compute_ctl.
	ID int
	// Name describes the entry. The test pins each ID to a hash of its Name.
	Name string
	// MinPGVersion is the lowest server_version_num the SQL runs on; below it the entry
	// only bumps the id. 0 means any version.
	MinPGVersion int
	// Skip marks an entry superseded by later code: it only bumps the id.
	Skip bool
	// SQL returns the statement(s) for the privileged role privRole (a plain role name,
	// quoted here). Nil when Skip is set.
	SQL func(privRole string) string
}

// All is the migration list. It is append-only: never change, reorder or remove an entry,
// because computes remember only the last id they applied (and computes that Neon's
// compute_ctl migrated continue from Neon's id, so entry k must have the effect of Neon's
// migration k).
var All = []Migration{
	{
		ID:   1,
		Name: "privileged role bypasses row-level security",
		SQL: func(priv string) string {
			return "ALTER ROLE " + ident(priv) + " BYPASSRLS"
		},
	},
	{
		ID:   2,
		Name: "members of the privileged role inherit, other roles lose BYPASSRLS",
		SQL:  inheritAndNoBypassRLS,
	},
	{
		ID:           3,
		Name:         "grant pg_create_subscription to the privileged role",
		MinPGVersion: PG16,
		SQL: func(priv string) string {
			return "GRANT pg_create_subscription TO " + ident(priv)
		},
	},
	{
		ID:   4,
		Name: "grant pg_monitor to the privileged role with admin option",
		SQL: func(priv string) string {
			return "GRANT pg_monitor TO " + ident(priv) + " WITH ADMIN OPTION"
		},
	},
	// 5-9: default-privilege grants and a replication revoke that later spec handling
	// superseded; they only bump the id.
	{ID: 5, Name: "superseded: default privileges on tables in public", Skip: true},
	{ID: 6, Name: "superseded: default privileges on sequences in public", Skip: true},
	{ID: 7, Name: "superseded: default privileges on tables in public with grant option", Skip: true},
	{ID: 8, Name: "superseded: default privileges on sequences in public with grant option", Skip: true},
	{ID: 9, Name: "superseded: revoke replication from roles that had it", Skip: true},
	{
		ID:           10,
		Name:         "grant pg_export_snapshot and pg_log_standby_snapshot to the privileged role",
		MinPGVersion: PG16,
		SQL: func(priv string) string {
			return "GRANT EXECUTE ON FUNCTION pg_catalog.pg_export_snapshot(), pg_catalog.pg_log_standby_snapshot() TO " + ident(priv)
		},
	},
	{
		ID:   11,
		Name: "grant pg_show_replication_origin_status to the privileged role",
		SQL: func(priv string) string {
			return "GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO " + ident(priv)
		},
	},
	{
		ID:   12,
		Name: "grant pg_signal_backend to the privileged role with admin option",
		SQL: func(priv string) string {
			return "GRANT pg_signal_backend TO " + ident(priv) + " WITH ADMIN OPTION"
		},
	},
}

// inheritAndNoBypassRLS is migration 2: every role that is a member of the privileged role
// (the role itself included) gets INHERIT; every other role whose name does not start with
// pg_ gets NOBYPASSRLS. Role names from the catalog are quoted by format('%I') inside the
// server; only the privileged role's name comes from Go, as an escaped regrole literal.
func inheritAndNoBypassRLS(priv string) string {
	body := `
DECLARE
	r record;
	priv oid := ` + literal(ident(priv)) + `::pg_catalog.regrole;
BEGIN
	FOR r IN SELECT rolname FROM pg_catalog.pg_roles
		WHERE pg_catalog.pg_has_role(oid, priv, 'MEMBER')
	LOOP
		EXECUTE pg_catalog.format('ALTER ROLE %I INHERIT', r.rolname);
	END LOOP;
	FOR r IN SELECT rolname FROM pg_catalog.pg_roles
		WHERE NOT pg_catalog.pg_has_role(oid, priv, 'MEMBER')
			AND NOT pg_catalog.starts_with(rolname, 'pg_')
	LOOP
		EXECUTE pg_catalog.format('ALTER ROLE %I NOBYPASSRLS', r.rolname);
	END LOOP;
END
`
	return "DO " + dollarQuote(body)
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal renders s as an escape-string literal (E'…'), which reads the same whatever
// standard_conforming_strings is.
func literal(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `''`)
	return `E'` + s + `'`
}

// dollarQuote wraps body in a dollar-quote whose tag does not occur in body.
func dollarQuote(body string) string {
	tag := "$m$"
	for strings.Contains(body, tag) {
		tag = "$m" + tag[1:]
	}
	return tag + body + tag
}
