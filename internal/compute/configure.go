package compute

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/computetools/compute-tools/internal/apply"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/jackc/pgx/v5"
)

// Configure is `compute-init configure`, run once Postgres is ready: it applies the
// spec's roles and databases and moves the status to running.
func Configure(ctx context.Context, cfg Config, d *Deps) error {
	start := d.now().UTC()
	rec, err := d.Store.Load()
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if rec.Status != state.Init {
		return d.fail(fmt.Errorf("configure: %w", &state.WrongStatusError{Status: rec.Status}))
	}
	raw, err := os.ReadFile(SpecFile(cfg.StateDir))
	if err != nil {
		return d.fail(fmt.Errorf("configure: read spec: %w", err))
	}
	cc, err := spec.ParseConfig(raw)
	if err != nil || cc.Spec == nil {
		return d.fail(fmt.Errorf("configure: stored spec is unusable: %v", err))
	}
	d.status("init: applying the spec")

	if err := applySpec(ctx, cfg, cc.Spec); err != nil {
		return d.fail(err)
	}

	end := d.now().UTC()
	var pgStart time.Duration
	if d.Units != nil {
		if s, r, err := d.Units.UnitTimestamps(ctx, paths.UnitPostgres); err == nil && !s.IsZero() && r.After(s) {
			pgStart = r.Sub(s)
		} else if err != nil {
			slog.Warn("could not read postgres unit timestamps", "err", err)
		}
	}
	rec, err = d.Store.Transition(state.Running, func(r *state.Record) {
		r.Metrics.StartPostgresMs = ms(pgStart)
		r.Metrics.ConfigMs = ms(end.Sub(start))
		r.Metrics.TotalStartupMs = ms(end.Sub(r.StartTime))
		r.SetError("")
	})
	if err != nil {
		return d.fail(err)
	}
	d.status("running")
	slog.Info("compute is running", "start_postgres_ms", rec.Metrics.StartPostgresMs,
		"config_ms", rec.Metrics.ConfigMs, "total_startup_ms", rec.Metrics.TotalStartupMs,
		"wait_for_spec_ms", rec.Metrics.WaitForSpecMs)
	return nil
}

func applySpec(ctx context.Context, cfg Config, s *spec.ComputeSpec) error {
	if s.SkipPgCatalogUpdates {
		slog.Info("skip_pg_catalog_updates is set: catalog left as it is")
		return nil
	}
	conn, err := connectRetry(ctx, cfg.Connstr)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	res, err := apply.Apply(ctx, conn, s, apply.Options{PrivilegedRole: cfg.PrivilegedRole})
	if err != nil {
		return fmt.Errorf("apply spec: %w", err)
	}
	slog.Info("spec applied", "result", res)
	return nil
}

// connectRetry connects as the admin role. Postgres has announced readiness already, so
// only a short retry covers a socket that is not there yet.
func connectRetry(ctx context.Context, connstr string) (*pgx.Conn, error) {
	var lastErr error
	for i := 0; i < 20; i++ {
		conn, err := pg.Connect(ctx, connstr, "compute_ctl:apply_config")
		if err == nil {
			return conn, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("connect to postgres: %w", lastErr)
}
