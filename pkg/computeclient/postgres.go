package computeclient

import (
	"context"
	"errors"
	"io"
	"net/url"

	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
)

// The wire types of the routes that read or change the running Postgres and of POST
// /promote, under names code outside this module can write.
type (
	// DbsAndRoles is GET /dbs_and_roles's body (Neon's DbsAndRoles).
	DbsAndRoles = pgopswire.CatalogObjects
	// CatalogRole is a role of DbsAndRoles (Neon's Role).
	CatalogRole = pgopswire.Role
	// CatalogDatabase is a database of DbsAndRoles (Neon's Database).
	CatalogDatabase = pgopswire.Database
	// GenericOption is the options entry of a CatalogRole or CatalogDatabase (always
	// null on this route).
	GenericOption = pgopswire.GenericOption
	// Insights is GET /insights's body (Neon's ComputeInsights): pg_stat_statements
	// rows as JSON objects.
	Insights = pgopswire.Insights
	// ExtensionInstallRequest is POST /extensions's body.
	ExtensionInstallRequest = pgopswire.ExtensionInstallRequest
	// ExtensionInstallResult is POST /extensions's answer.
	ExtensionInstallResult = pgopswire.ExtensionInstallResponse
	// SetRoleGrantsRequest is POST /grants's body.
	SetRoleGrantsRequest = pgopswire.SetRoleGrantsRequest
	// SetRoleGrantsResponse is POST /grants's answer (the request, echoed).
	SetRoleGrantsResponse = pgopswire.SetRoleGrantsResponse
	// Privilege is a privilege of SetRoleGrantsRequest (the Privilege* constants).
	Privilege = pgopswire.Privilege
	// PromoteRequest is POST /promote's body (Neon's SafekeepersLsn).
	PromoteRequest = promotestate.Request
	// PromoteState is POST /promote's answer (Neon's PromoteState); its Status is one
	// of the Promote* constants.
	PromoteState = promotestate.State
	// PromoteStatus is the status of a PromoteState.
	PromoteStatus = promotestate.Status
	// Lsn is a WAL position; it is written "HI/LO" in JSON (ParseLsn reads that form).
	Lsn = spec.Lsn
)

// ParseLsn reads an LSN written "HI/LO" (e.g. "0/16B5A50").
func ParseLsn(s string) (Lsn, error) { return spec.ParseLsn(s) }

// The privileges of POST /grants.
const (
	PrivilegeSelect     = pgopswire.Select
	PrivilegeInsert     = pgopswire.Insert
	PrivilegeUpdate     = pgopswire.Update
	PrivilegeDelete     = pgopswire.Delete
	PrivilegeTruncate   = pgopswire.Truncate
	PrivilegeReferences = pgopswire.References
	PrivilegeTrigger    = pgopswire.Trigger
	PrivilegeUsage      = pgopswire.Usage
	PrivilegeCreate     = pgopswire.Create
	PrivilegeConnect    = pgopswire.Connect
	PrivilegeTemporary  = pgopswire.Temporary
	PrivilegeExecute    = pgopswire.Execute
)

// The statuses of a PromoteState. POST /promote answers PromoteCompleted (nil error)
// or PromoteFailed (with an *Error with 500); PromoteNotPromoted is never its answer.
const (
	PromoteNotPromoted = promotestate.NotPromoted
	PromoteCompleted   = promotestate.Completed
	PromoteFailed      = promotestate.Failed
)

// CheckWritability checks that the compute takes writes (POST /check_writability):
// nil when it answered `true`. A compute that is not running is an *Error with 412; a
// failed write one with 500 and Postgres' error.
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

// Insights returns the top pg_stat_statements rows (GET /insights); the compute must
// be running (else an *Error with 412).
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
// promotion. A failed promotion returns both its PromoteState (status failed, with the
// reason) and an *Error with 500 carrying the same reason; a compute that is not
// running is an *Error with 412 (and a nil state).
func (cl *Client) Promote(ctx context.Context, req PromoteRequest) (*PromoteState, error) {
	b, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out PromoteState
	if _, err := cl.c.doJSON(ctx, request{method: "POST", path: "/promote", body: b,
		contentType: "application/json", auth: true, accept: []int{200}}, &out); err != nil {
		var e *Error
		if errors.As(err, &e) && e.StatusCode == 500 {
			var st PromoteState
			if decodeStrict(e.body, &st) == nil && st.Status == PromoteFailed {
				return &st, err
			}
		}
		return nil, err
	}
	return &out, nil
}

// InstallExtension installs or updates an extension in a database (POST /extensions,
// 201).
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

// SetRoleGrants grants privileges on a schema to a role (POST /grants, 201). A system
// schema (pg_catalog, information_schema, pg_*) is refused with an *Error with 422.
func (in *Internal) SetRoleGrants(ctx context.Context, req SetRoleGrantsRequest) (*SetRoleGrantsResponse, error) {
	b, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out SetRoleGrantsResponse
	if _, err := in.c.doJSON(ctx, request{method: "POST", path: "/grants", body: b,
		contentType: "application/json", accept: []int{201}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
