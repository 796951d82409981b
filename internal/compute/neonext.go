package compute

import (
	"context"
	"log/slog"
	"time"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/jackc/pgx/v5"
)

// NeonUpdateAppName is the application_name of the neon extension's update session
// (compute_ctl's post_apply_config).
const NeonUpdateAppName = "compute_ctl:post_apply_config"

// neonUpdateTimeout bounds the update: it may wait for locks, and compute-configure must
// end (compute_ctl has no bound; its task dies with the process).
const neonUpdateTimeout = time.Minute

// updateNeonExtension runs `ALTER EXTENSION neon UPDATE`, as compute_ctl does on every
// primary start (post_apply_config, even with skip_pg_catalog_updates), so that a compute
// image with a newer neon library brings its SQL objects up to date: on conn, the admin
// session the start already has, or, when there is none (nil or closed), in a session of
// its own on connstr. It is skipped (logged) when the extension is not installed in the
// admin database; a failure is logged, never fatal.
func updateNeonExtension(ctx context.Context, conn *pgx.Conn, connstr string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, neonUpdateTimeout)
	defer cancel()
	start := time.Now()
	if conn == nil || conn.IsClosed() {
		c, err := pg.Connect(ctx, connstr, NeonUpdateAppName)
		if err != nil {
			log.Error("update extension neon", "err", err)
			return
		}
		defer c.Close(context.Background())
		conn = c
	}
	var installed bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'neon')").Scan(&installed); err != nil {
		log.Error("update extension neon: is it installed", "err", err)
		return
	}
	if !installed {
		log.Info("extension neon not installed: no update")
		return
	}
	if _, err := conn.Exec(ctx, "ALTER EXTENSION neon UPDATE"); err != nil {
		log.Error("update extension neon", "err", err)
		return
	}
	var version string
	_ = conn.QueryRow(ctx, "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'neon'").Scan(&version)
	log.Info("extension neon updated", "version", version, "update_ms", time.Since(start).Milliseconds())
}
