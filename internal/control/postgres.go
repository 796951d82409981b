package control

import (
	"context"
	"errors"
	"io"

	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
	"github.com/computetools/compute-tools/internal/state"
)

// Postgres is what the routes that read or change the running Postgres do
// (*pgops.Ops implements it).
type Postgres interface {
	CheckWritability(ctx context.Context) error
	Insights(ctx context.Context) (pgopswire.Insights, error)
	DBsAndRoles(ctx context.Context) (pgopswire.CatalogObjects, error)
	// DumpSchema streams a schema-only dump of db; before the stream, a missing
	// database is pgopswire.ErrDatabaseNotFound.
	DumpSchema(ctx context.Context, db string) (io.ReadCloser, error)
	// DatabaseExists reports whether the catalog has database db.
	DatabaseExists(ctx context.Context, db string) (bool, error)
	InstallExtension(ctx context.Context, req pgopswire.ExtensionInstallRequest) (string, error)
	SetRoleGrants(ctx context.Context, req pgopswire.SetRoleGrantsRequest) error
}

// PostgresError is the failure of a Postgres operation itself (connecting, a statement,
// pg_dump), as opposed to a refusal in the compute's status.
type PostgresError struct{ Err error }

func (e *PostgresError) Error() string { return e.Err.Error() }

func (e *PostgresError) Unwrap() error { return e.Err }

// errNoPostgres: compute-api was built without a Postgres connection.
var errNoPostgres = errors.New("compute-api has no Postgres connection configured")

// postgres returns the Postgres operations; when the compute must be running for them
// (as compute_ctl requires for every route here but /dbs_and_roles and
// /database_schema), another status is a *state.WrongStatusError (412).
func (c *Controller) postgres(mustRun bool) (Postgres, error) {
	if mustRun {
		rec, err := c.Load()
		if err != nil {
			return nil, &StateError{Op: "read state", Err: err}
		}
		if rec.Status != state.Running {
			return nil, &state.WrongStatusError{Status: rec.Status}
		}
	}
	if c.cfg.Postgres == nil {
		return nil, &PostgresError{Err: errNoPostgres}
	}
	return c.cfg.Postgres, nil
}

// CheckWritability is POST /check_writability: the compute must be running; then the
// health_check row is upserted (a full disk counts as writable).
func (c *Controller) CheckWritability(ctx context.Context) error {
	pg, err := c.postgres(true)
	if err != nil {
		return err
	}
	if err := pg.CheckWritability(ctx); err != nil {
		return &PostgresError{Err: err}
	}
	return nil
}

// Insights is GET /insights: the compute must be running.
func (c *Controller) Insights(ctx context.Context) (pgopswire.Insights, error) {
	pg, err := c.postgres(true)
	if err != nil {
		return pgopswire.Insights{}, err
	}
	in, err := pg.Insights(ctx)
	if err != nil {
		return pgopswire.Insights{}, &PostgresError{Err: err}
	}
	return in, nil
}

// DBsAndRoles is GET /dbs_and_roles, in any status (Postgres answers or not).
func (c *Controller) DBsAndRoles(ctx context.Context) (pgopswire.CatalogObjects, error) {
	pg, err := c.postgres(false)
	if err != nil {
		return pgopswire.CatalogObjects{}, err
	}
	objs, err := pg.DBsAndRoles(ctx)
	if err != nil {
		return pgopswire.CatalogObjects{}, &PostgresError{Err: err}
	}
	return objs, nil
}

// DatabaseSchema is GET /database_schema, in any status: the schema-only dump of db as a
// stream (pgopswire.ErrDatabaseNotFound when db does not exist). The stream must be
// closed; it ends (pg_dump killed) when ctx does.
func (c *Controller) DatabaseSchema(ctx context.Context, db string) (io.ReadCloser, error) {
	pg, err := c.postgres(false)
	if err != nil {
		return nil, err
	}
	rc, err := pg.DumpSchema(ctx, db)
	if errors.Is(err, pgopswire.ErrDatabaseNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, &PostgresError{Err: err}
	}
	return rc, nil
}

// DatabaseSchemaExists is HEAD /database_schema, in any status: what GET would answer
// before its dump begins, without running pg_dump: nil when db exists,
// pgopswire.ErrDatabaseNotFound when it does not, a *PostgresError when Postgres does not
// answer. (A GET whose pg_dump fails for another reason answers 500; a HEAD cannot tell
// without running it.)
func (c *Controller) DatabaseSchemaExists(ctx context.Context, db string) error {
	pg, err := c.postgres(false)
	if err != nil {
		return err
	}
	ok, err := pg.DatabaseExists(ctx, db)
	if err != nil {
		return &PostgresError{Err: err}
	}
	if !ok {
		return pgopswire.ErrDatabaseNotFound
	}
	return nil
}

// InstallExtension is the internal port's POST /extensions: the compute must be running;
// it returns the version installed.
func (c *Controller) InstallExtension(ctx context.Context, req pgopswire.ExtensionInstallRequest) (string, error) {
	pg, err := c.postgres(true)
	if err != nil {
		return "", err
	}
	v, err := pg.InstallExtension(ctx, req)
	if err != nil {
		return "", &PostgresError{Err: err}
	}
	return v, nil
}

// SetRoleGrants is the internal port's POST /grants: the compute must be running.
func (c *Controller) SetRoleGrants(ctx context.Context, req pgopswire.SetRoleGrantsRequest) error {
	pg, err := c.postgres(true)
	if err != nil {
		return err
	}
	if err := pg.SetRoleGrants(ctx, req); err != nil {
		return &PostgresError{Err: err}
	}
	return nil
}
