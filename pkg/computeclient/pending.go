package computeclient

// The routes of compute_ctl that compute-tools does not serve yet on this branch
// (api/openapi.yaml lists them as answered 404). Their methods follow Neon's OpenAPI
// document (/check_writability, /insights, /dbs_and_roles, /database_schema, /promote;
// internal /extensions, /grants and the testing build's /failpoints) and the
// reference's code where the two differ (201 for /extensions and /grants, JSON `true`
// for /check_writability). The types below are PROVISIONAL: when the server's wire types
// land, each becomes an alias of the server's type, as in external.go, and the methods
// get round-trip tests. The server sides being written (issue 11) name them:
//
//	DbsAndRoles             = pgopswire.CatalogObjects   (internal/pgops/pgopswire)
//	CatalogRole             = pgopswire.Role
//	CatalogDatabase         = pgopswire.Database
//	Insights                = pgopswire.Insights
//	ExtensionInstallRequest = pgopswire.ExtensionInstallRequest
//	ExtensionInstallResult  = pgopswire.ExtensionInstallResponse
//	SetRoleGrantsRequest    = pgopswire.SetRoleGrantsRequest (and its Response for the answer)
//	PromoteRequest          = promotestate.Request       (internal/promote/promotestate)
//	PromoteState            = promotestate.State

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
)

// DbsAndRoles is GET /dbs_and_roles's body (Neon's DbsAndRoles). Provisional.
type DbsAndRoles struct {
	Roles     []CatalogRole     `json:"roles"`
	Databases []CatalogDatabase `json:"databases"`
}

// CatalogRole is a role of DbsAndRoles (Neon's Role). Provisional.
type CatalogRole struct {
	Name              string          `json:"name"`
	EncryptedPassword *string         `json:"encrypted_password"`
	Options           json.RawMessage `json:"options"`
}

// CatalogDatabase is a database of DbsAndRoles (Neon's Database). Provisional.
type CatalogDatabase struct {
	Name         string          `json:"name"`
	Owner        string          `json:"owner"`
	Options      json.RawMessage `json:"options"`
	RestrictConn bool            `json:"restrict_conn"`
	Invalid      bool            `json:"invalid"`
}

// Insights is GET /insights's body (Neon's ComputeInsights): pg_stat_statements rows
// as objects. Provisional.
type Insights struct {
	PgStatStatements []json.RawMessage `json:"pg_stat_statements"`
}

// PromoteRequest is POST /promote's body (Neon's SafekeepersLsn). Provisional.
type PromoteRequest struct {
	// Safekeepers is the comma-separated safekeeper list of the new primary.
	Safekeepers string `json:"safekeepers"`
	// WalFlushLSN is the old primary's last WAL flush LSN ("X/Y").
	WalFlushLSN string `json:"wal_flush_lsn"`
}

// PromoteState is POST /promote's answer (Neon's PromoteState): status not_promoted,
// completed or failed. Provisional.
type PromoteState struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// ExtensionInstallRequest is POST /extensions's body. Provisional.
type ExtensionInstallRequest struct {
	Extension string `json:"extension"`
	Database  string `json:"database"`
	Version   string `json:"version"`
}

// ExtensionInstallResult is POST /extensions's answer. Provisional.
type ExtensionInstallResult struct {
	Extension string `json:"extension"`
	Version   string `json:"version"`
}

// SetRoleGrantsRequest is POST /grants's body, echoed as its answer. Provisional.
type SetRoleGrantsRequest struct {
	Database   string   `json:"database"`
	Schema     string   `json:"schema"`
	Privileges []string `json:"privileges"`
	Role       string   `json:"role"`
}

// FailpointConfig is one entry of POST /failpoints's body (testing builds only): the
// failpoint's name and its actions in the `fail` crate's syntax. Provisional.
type FailpointConfig struct {
	Name    string `json:"name"`
	Actions string `json:"actions"`
}

// CheckWritability checks that the compute takes writes (POST /check_writability):
// nil when it answered `true`.
func (cl *Client) CheckWritability(ctx context.Context) error {
	var ok bool
	if _, err := cl.c.doJSON(ctx, request{method: "POST", path: "/check_writability", auth: true, accept: []int{200}}, &ok); err != nil {
		return err
	}
	if !ok {
		return &Error{StatusCode: 200, Message: "check_writability answered false"}
	}
	return nil
}

// Insights returns the top pg_stat_statements rows (GET /insights).
func (cl *Client) Insights(ctx context.Context) (*Insights, error) {
	var out Insights
	if _, err := cl.c.doJSON(ctx, request{method: "GET", path: "/insights", auth: true, accept: []int{200}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DbsAndRoles returns the roles and databases of the catalog (GET /dbs_and_roles).
func (cl *Client) DbsAndRoles(ctx context.Context) (*DbsAndRoles, error) {
	var out DbsAndRoles
	if _, err := cl.c.doJSON(ctx, request{method: "GET", path: "/dbs_and_roles", auth: true, accept: []int{200}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DatabaseSchema returns `pg_dump --schema-only` of database as it streams (GET
// /database_schema); the caller reads and closes it (closing early stops the dump on
// the server). A database that does not exist is an *Error with 404.
func (cl *Client) DatabaseSchema(ctx context.Context, database string) (io.ReadCloser, error) {
	resp, err := cl.c.do(ctx, request{method: "GET", path: "/database_schema", auth: true,
		query: url.Values{"database": {database}}, accept: []int{200}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Promote promotes a replica to primary (POST /promote, JSON body as Neon's OpenAPI
// documents) and returns once the promotion is done; concurrent calls join one
// promotion. A failed promotion is an *Error with 500.
func (cl *Client) Promote(ctx context.Context, req PromoteRequest) (*PromoteState, error) {
	b, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out PromoteState
	if _, err := cl.c.doJSON(ctx, request{method: "POST", path: "/promote", body: b,
		contentType: "application/json", auth: true, accept: []int{200}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// InstallExtension installs or updates an extension in a database (POST /extensions).
func (in *Internal) InstallExtension(ctx context.Context, req ExtensionInstallRequest) (*ExtensionInstallResult, error) {
	b, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out ExtensionInstallResult
	if _, err := in.c.doJSON(ctx, request{method: "POST", path: "/extensions", body: b,
		contentType: "application/json", accept: []int{201}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetRoleGrants grants privileges on a schema to a role (POST /grants).
func (in *Internal) SetRoleGrants(ctx context.Context, req SetRoleGrantsRequest) (*SetRoleGrantsRequest, error) {
	b, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out SetRoleGrantsRequest
	if _, err := in.c.doJSON(ctx, request{method: "POST", path: "/grants", body: b,
		contentType: "application/json", accept: []int{201}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ConfigureFailpoints sets failpoints (POST /failpoints, internal port, testing builds
// only; other builds answer 404).
func (in *Internal) ConfigureFailpoints(ctx context.Context, fps []FailpointConfig) error {
	b, err := jsonBody(fps)
	if err != nil {
		return err
	}
	_, err = in.c.doEmpty(ctx, request{method: "POST", path: "/failpoints", body: b,
		contentType: "application/json", accept: []int{200}})
	return err
}
