package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
)

// isAuthFailure reports whether err is Postgres refusing the login itself: SQLSTATE 28P01
// (invalid password) or 28000 (invalid authorization: among others, "role does not
// exist" and "no pg_hba.conf entry"), the two codes compute_ctl falls back on.
func isAuthFailure(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
}

// createAdminAsLegacy is compute_ctl's fallback for old timelines (get_maintenance_client):
// when the admin role cannot log in, connect with the same connection string as
// zenith_admin (`-c role=zenith_admin` and the maintenance options, DDL forwarding off),
// then `CREATE USER <admin> WITH SUPERUSER` and `GRANT zenith_admin TO <admin>`, so that
// the admin role exists, is a superuser and holds what zenith_admin owns. The caller then
// connects again as the admin role. The admin role is the connection string's user
// (cloud_admin by default); compute_ctl writes cloud_admin literally. When cloud_admin
// exists already (a wrong password, not an old timeline), CREATE USER fails, as in
// compute_ctl, and the error says so.
func createAdminAsLegacy(ctx context.Context, connstr string) error {
	cfg, err := pg.ApplyConfig(connstr)
	if err != nil {
		return err
	}
	admin := cfg.User
	if admin == paths.LegacyAdminRole {
		return errors.New("the admin role is zenith_admin itself")
	}
	cfg.User = paths.LegacyAdminRole
	cfg.RuntimeParams["options"] = "-c role=" + paths.LegacyAdminRole + " " + cfg.RuntimeParams["options"]
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect as %s: %w", paths.LegacyAdminRole, err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		"CREATE USER " + pg.Ident(admin) + " WITH SUPERUSER",
		"GRANT " + pg.Ident(paths.LegacyAdminRole) + " TO " + pg.Ident(admin),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("set up %s as %s: %w", admin, paths.LegacyAdminRole, err)
		}
	}
	return nil
}

// connectAdmin opens the apply session as the admin role. With legacy (neon mode) a
// refused login is retried once through createAdminAsLegacy; a failing fallback is
// reported with the first refusal and is final (no point retrying it).
func connectAdmin(ctx context.Context, connstr string, legacy bool, log *slog.Logger) (*pgx.Conn, error) {
	conn, err := pg.ConnectApply(ctx, connstr)
	if err == nil || !legacy || !isAuthFailure(err) {
		return conn, err
	}
	log.Warn("cannot log in as the admin role; retrying as zenith_admin to create it (old timeline)", "err", err)
	if lerr := createAdminAsLegacy(ctx, connstr); lerr != nil {
		return nil, &legacyError{first: err, fallback: lerr}
	}
	log.Info("admin role created by zenith_admin (old timeline)")
	conn, err = pg.ConnectApply(ctx, connstr)
	if err != nil {
		return nil, &legacyError{first: err, fallback: errors.New("connecting again after creating it failed")}
	}
	return conn, nil
}

// legacyError is a login refused both as the admin role and through zenith_admin.
type legacyError struct{ first, fallback error }

func (e *legacyError) Error() string {
	return fmt.Sprintf("%v; zenith_admin fallback (old timelines): %v", e.first, e.fallback)
}

func (e *legacyError) Unwrap() []error { return []error{e.first, e.fallback} }
