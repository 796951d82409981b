// Package pgopswire holds the wire types of compute-api's routes that read or change the
// running Postgres (Neon's compute_api types): GET /dbs_and_roles (CatalogObjects), GET
// /insights (Insights), POST /extensions and POST /grants (their requests and
// responses, the Privilege enum), and the outcome ErrDatabaseNotFound of GET
// /database_schema. It imports the standard library only, so that a client
// (pkg/computeclient) can use it without the server's code.
package pgopswire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// GenericOption is Neon's GenericOption (a spec's name/value pair). The routes here
// always send null options, as compute_ctl does; the type gives a client their shape.
type GenericOption struct {
	Name    string  `json:"name"`
	Value   *string `json:"value"`
	Vartype string  `json:"vartype"`
}

// Role is a role as GET /dbs_and_roles shows it (Neon's Role): every row of pg_authid,
// the stored password hash as is (null without one), options null.
type Role struct {
	Name              string          `json:"name"`
	EncryptedPassword *string         `json:"encrypted_password"`
	Options           []GenericOption `json:"options"`
}

// Database is a database as GET /dbs_and_roles shows it (Neon's Database): RestrictConn
// is NOT datallowconn, Invalid is datconnlimit = -2 (a DROP DATABASE that was
// interrupted), options null.
type Database struct {
	Name         string          `json:"name"`
	Owner        string          `json:"owner"`
	Options      []GenericOption `json:"options"`
	RestrictConn bool            `json:"restrict_conn"`
	Invalid      bool            `json:"invalid"`
}

// CatalogObjects is the answer of GET /dbs_and_roles.
type CatalogObjects struct {
	Roles     []Role     `json:"roles"`
	Databases []Database `json:"databases"`
}

// Insights is the answer of GET /insights: up to 100 rows of pg_stat_statements (each
// the row_to_json of a row), as a JSON object. compute_ctl sends this object encoded
// once more, as a JSON string; Neon's OpenAPI document says an object, which is what
// is sent here (docs/architecture.md).
type Insights struct {
	PgStatStatements []json.RawMessage `json:"pg_stat_statements"`
}

// ExtensionInstallRequest is the body of POST /extensions (all fields required).
type ExtensionInstallRequest struct {
	Extension string `json:"extension"`
	Database  string `json:"database"`
	Version   string `json:"version"`
}

// ExtensionInstallResponse is the answer of POST /extensions: the extension and the
// version asked for.
type ExtensionInstallResponse struct {
	Extension string `json:"extension"`
	Version   string `json:"version"`
}

// SetRoleGrantsRequest is the body of POST /grants (all fields required): grant the
// privileges on the schema of the database to the role.
type SetRoleGrantsRequest struct {
	Database   string      `json:"database"`
	Schema     string      `json:"schema"`
	Privileges []Privilege `json:"privileges"`
	Role       string      `json:"role"`
}

// SetRoleGrantsResponse is the answer of POST /grants: the request, echoed.
type SetRoleGrantsResponse struct {
	Database   string      `json:"database"`
	Schema     string      `json:"schema"`
	Privileges []Privilege `json:"privileges"`
	Role       string      `json:"role"`
}

// Privilege is a privilege of POST /grants, upper case (Neon's Privilege enum).
type Privilege string

// The privileges Neon's enum has, in its order.
const (
	Select     Privilege = "SELECT"
	Insert     Privilege = "INSERT"
	Update     Privilege = "UPDATE"
	Delete     Privilege = "DELETE"
	Truncate   Privilege = "TRUNCATE"
	References Privilege = "REFERENCES"
	Trigger    Privilege = "TRIGGER"
	Usage      Privilege = "USAGE"
	Create     Privilege = "CREATE"
	Connect    Privilege = "CONNECT"
	Temporary  Privilege = "TEMPORARY"
	Execute    Privilege = "EXECUTE"
)

// Privileges lists every Privilege, in Neon's order.
var Privileges = []Privilege{Select, Insert, Update, Delete, Truncate, References, Trigger, Usage, Create, Connect, Temporary, Execute}

// SystemSchema reports whether schema is one of PostgreSQL's own (pg_catalog,
// information_schema, the pg_toast and pg_temp ones: every pg_ name is reserved).
// POST /grants refuses them: privileges there (CREATE on pg_catalog) let a role plant
// objects that superuser sessions resolve first. compute_ctl grants them; we differ.
func SystemSchema(schema string) bool {
	return schema == "information_schema" || strings.HasPrefix(schema, "pg_")
}

// Valid reports whether p is one of Privileges.
func (p Privilege) Valid() bool {
	for _, q := range Privileges {
		if p == q {
			return true
		}
	}
	return false
}

// UnmarshalJSON accepts only the enum's values (exact case), as serde does; the error
// names them.
func (p *Privilege) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("invalid type: %s, expected a privilege string", jsonKind(b))
	}
	if !Privilege(s).Valid() {
		names := make([]string, len(Privileges))
		for i, q := range Privileges {
			names[i] = "`" + string(q) + "`"
		}
		return fmt.Errorf("unknown variant %q, expected one of %s", s, strings.Join(names, ", "))
	}
	*p = Privilege(s)
	return nil
}

// jsonKind names the JSON type of b for an error message.
func jsonKind(b []byte) string {
	switch s := strings.TrimSpace(string(b)); {
	case s == "null":
		return "null"
	case s == "true" || s == "false":
		return "boolean"
	case strings.HasPrefix(s, "\""):
		return "string"
	case strings.HasPrefix(s, "["):
		return "sequence"
	case strings.HasPrefix(s, "{"):
		return "map"
	}
	return "number"
}

// ErrDatabaseNotFound is GET /database_schema's 404, "database does not exist".
var ErrDatabaseNotFound = errors.New("database does not exist")
