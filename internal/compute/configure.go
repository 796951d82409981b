package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/apply"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/migrations"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgready"
	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// Configure is `compute-init configure --managed` (compute-configure.service). After the
// first start (status init) it applies the spec, moves the status to running and then runs
// the migrations. When POST /configure reconfigures a running compute (status
// configuration_pending), it applies the new config to the running Postgres; so it does
// for the fresh spec that POST /refresh_configuration got from the control plane (status
// refresh_configuration), going back to refresh_configuration_pending when that fails.
func Configure(ctx context.Context, cfg Settings, d *Deps) error {
	d = d.as(state.ActorConfigure)
	rec, err := d.Store.Load()
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	switch rec.Status {
	case state.Init:
		return firstConfigure(ctx, cfg, d, rec)
	case state.ConfigurationPending:
		return reconfigure(ctx, cfg, d)
	case state.RefreshConfiguration:
		return applyRefresh(ctx, cfg, d)
	case state.Running:
		// Someone restarted the unit by hand: nothing to do, and nothing has failed.
		return fmt.Errorf("configure: the compute is already running; send POST /configure to reconfigure it")
	case state.Failed:
		// Postgres failed (its stop hook recorded why) before this step began: say so as
		// waitPostgres does when that happens while it waits.
		msg := "configure: postgres did not come up: the compute is failed"
		if rec.Error != nil {
			msg += ": " + *rec.Error
		}
		return errors.New(msg)
	default:
		return d.fail(fmt.Errorf("configure: %w", &state.WrongStatusError{Status: rec.Status}))
	}
}

// readConfig reads and validates a stored config (pending or applied), once.
func readConfig(path string) (*spec.Loaded, error) {
	return readConfigAs(path, "read config")
}

// readAppliedConfig is readConfig of the running compute's config, for the steps that
// come after the start (the final sync, the lease loop).
func readAppliedConfig(cfg Settings) (*spec.Loaded, error) {
	return readConfigAs(paths.AppliedConfigFile(cfg.StateDir), "read applied config")
}

func readConfigAs(path, what string) (*spec.Loaded, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return spec.Load(raw)
}

// applyAndRecord applies the spec, with unchanged databases skipped (as recorded in the
// cluster, see apply.AppliedDBsTable) and, in neon mode, the cluster size limit lifted.
func applyAndRecord(ctx context.Context, cfg Settings, conn *pgx.Conn, s *spec.ComputeSpec, parsed *spec.Parsed, concurrency int, log *slog.Logger) error {
	opts := applyOptions(cfg, parsed, concurrency)
	opts.SkipUnchanged = true
	opts.Logger = log
	enabled := false
	err := withClusterSizeLifted(ctx, cfg, parsed, conn, func() error {
		if _, err := apply.Apply(ctx, conn, s, opts); err != nil {
			return err
		}
		var err error
		enabled, err = pgdataDir(cfg, parsed).EnableSubscribers()
		return err
	})
	if err != nil {
		return fmt.Errorf("apply spec: %w", err)
	}
	if enabled && parsed.Storage != spec.StorageNeon {
		// In neon mode the reload that drops the temp override covers it.
		return reloadConf(ctx, conn)
	}
	return nil
}

func firstConfigure(ctx context.Context, cfg Settings, d *Deps, rec state.Record) error {
	l, err := readConfig(paths.AppliedConfigFile(cfg.StateDir))
	if err != nil {
		return d.fail(fmt.Errorf("configure: %w", err))
	}
	s, parsed := l.ComputeSpec(), l.Spec
	if cfg, _, err = forSpec(cfg, parsed); err != nil {
		return d.fail(err)
	}
	// pgbouncer and local_proxy get their settings beside the start (never failing it).
	defer startCompanions(ctx, cfg, d, s, l.Config)()
	// compute-configure starts beside compute-postgres, not after it: everything up to
	// here overlaps with Postgres starting, and the wait ends on the same signal as the
	// unit's READY=1 (docs/architecture.md, "Start path").
	d.status("init: waiting for postgres")
	since := rec.StartTime
	if rec.PrepareDoneAt != nil {
		since = *rec.PrepareDoneAt
	}
	if err := waitPostgres(ctx, cfg, d, since); err != nil {
		return err
	}
	start := d.now().UTC()
	pgStart := postgresStartTime(ctx, d, since, start)
	d.status("init: applying the spec")

	var conn *pgx.Conn
	if s.Mode.IsPrimary() && !s.SkipPgCatalogUpdates {
		conn, err = connectRetry(ctx, cfg.Connstr, parsed.Storage == spec.StorageNeon, d.logger())
		if err != nil {
			// Prepare lifted the size limit for the apply that cannot run now: put it
			// back in the file (a reload needs the connection we do not have).
			if parsed.Storage == spec.StorageNeon {
				if werr := pgdataDir(cfg, parsed).WriteTempOverride(""); werr != nil {
					d.logger().Warn("could not empty the temp override", "err", werr)
				}
			}
			return d.fail(err)
		}
		defer conn.Close(context.Background())
		if err := applyAndRecord(ctx, cfg, conn, s, parsed, apply.StartupConcurrency(s), d.Log); err != nil {
			return d.fail(err)
		}
		// As compute_ctl's apply_config: local_proxy's config once more, and here a
		// failure fails the start.
		if s.LocalProxyConfig != nil {
			if err := configureLocalProxy(ctx, cfg, d, s.LocalProxyConfig, tlsfiles.Enabled(l.Config)); err != nil {
				return d.fail(fmt.Errorf("configure local_proxy: %w", err))
			}
		}
	} else if s.SkipPgCatalogUpdates {
		d.logger().Info("skip_pg_catalog_updates is set: catalog left as it is")
	}

	end := d.now().UTC()
	pgStartMs := <-pgStart
	rec, err = d.Store.MarkRunning(func(r *state.Record) {
		r.Metrics.StartPostgresMs = pgStartMs
		r.Metrics.ConfigMs = ms(end.Sub(start))
		r.Metrics.TotalStartupMs = ms(end.Sub(r.StartTime))
	})
	if err != nil {
		return d.fail(err)
	}
	d.status("running")
	logx.Milestone(d.logger(), logx.MsgRunning, "compute is running", "start_postgres_ms", rec.Metrics.StartPostgresMs,
		"config_ms", rec.Metrics.ConfigMs, "total_startup_ms", rec.Metrics.TotalStartupMs,
		"wait_for_spec_ms", rec.Metrics.WaitForSpecMs)

	// Migrations run after the compute is up, as in Neon: a failure is logged and
	// counted, and does not fail the compute.
	if conn != nil {
		runMigrations(ctx, cfg, d, conn)
	}
	// The neon extension's update runs on every primary start, after running (compute_ctl
	// spawns it just before running, beside the migrations, in a session of its own); a
	// failure is logged only. Here it follows the migrations on their session when there
	// is one: a second backend started beside them would compete with the first client
	// queries of the compute for the CPU (bench/README.md, start path).
	if s.Mode.IsPrimary() {
		updateNeonExtension(ctx, conn, cfg.Connstr, d.logger())
	}
	if parsed.Storage == spec.StorageNeon {
		removeOldPGData(pgdataDir(cfg, parsed), d.logger())
	}
	return nil
}

// waitPostgres waits until the Postgres of this lifecycle (started after since) accepts
// connections. It gives up when the compute leaves init: Postgres did not start (the
// stop hook recorded why) or the compute is being terminated.
func waitPostgres(ctx context.Context, cfg Settings, d *Deps, since time.Time) error {
	wake, cancel := d.subscribe()
	// Unsubscribing is a D-Bus round trip: not on the startup path.
	defer func() { go cancel() }()
	pf, err := pgready.Wait(ctx, cfg.PGData, pgready.Options{Since: since, Wake: wake, Check: func() error {
		r, err := d.Store.Load()
		if err != nil {
			return err
		}
		if r.Status != state.Init {
			msg := fmt.Sprintf("postgres did not come up: the compute is %s", r.Status)
			if r.Error != nil {
				msg += ": " + *r.Error
			}
			return errors.New(msg)
		}
		return nil
	}})
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	d.logger().Info("postgres accepts connections", "pid", pf.PID)
	return nil
}

// postgresStartTime works out, in the background, how long Postgres took from its
// process start (systemd's ExecMainStartTimestamp of compute-postgres, which must belong
// to this lifecycle: after since) to accepting connections (ready, as seen here: systemd
// may not have processed READY=1 yet); 0 when unknown.
func postgresStartTime(ctx context.Context, d *Deps, since, ready time.Time) <-chan uint64 {
	ch := make(chan uint64, 1)
	if d.Units == nil {
		ch <- 0
		return ch
	}
	go func() {
		s, _, err := d.Units.UnitTimestamps(ctx, paths.UnitPostgres)
		switch {
		case err != nil:
			d.logger().Warn("could not read postgres unit timestamps", "err", err)
			ch <- 0
		case s.Before(since) || s.After(ready):
			d.logger().Warn("postgres unit start time is not of this lifecycle", "exec_main_start", s, "ready", ready)
			ch <- 0
		default:
			ch <- ms(ready.Sub(s))
		}
	}()
	return ch
}

// removeOldPGData deletes the PGDATAs of earlier lifecycles that prepare set aside (neon
// mode), now that nothing waits for it.
func removeOldPGData(dir pgdata.Dir, log *slog.Logger) {
	start := time.Now()
	n, err := dir.RemoveOld()
	if err != nil {
		log.Warn("could not remove an old PGDATA", "err", err)
		return
	}
	if n > 0 {
		log.Info("old PGDATA removed", "count", n, "remove_ms", time.Since(start).Milliseconds())
	}
}

func runMigrations(ctx context.Context, cfg Settings, d *Deps, conn *pgx.Conn) {
	ci, _ := parseConnstr(cfg.Connstr)
	res, err := migrations.Run(ctx, conn, migrations.Options{
		PrivilegedRole: cfg.PrivilegedRole,
		AdminRole:      ci.User,
		Logger:         d.Log,
		OnFailure: func(id int) {
			if err := d.Store.CountMigrationFailure(strconv.Itoa(id)); err != nil {
				d.logger().Warn("record migration failure", "err", err)
			}
		},
	})
	if err != nil {
		d.logger().Error("migrations not run", "err", err)
		return
	}
	if _, err := d.Store.Update(func(r *state.Record) error { r.MigrationID = res.To; return nil }); err != nil {
		d.logger().Warn("record migration id", "err", err)
	}
	d.logger().Info("migrations done", "from", res.From, "to", res.To, "applied", res.Applied, "skipped", res.Skipped)
}

// reconfigure applies the config sent with POST /configure to the running compute:
// configuration_pending -> configuration -> running (or failed with the reason; a later
// /configure with a good config recovers).
func reconfigure(ctx context.Context, cfg Settings, d *Deps) error {
	if _, err := d.Store.BeginReconfiguration(); err != nil {
		return d.fail(err)
	}
	d.status("configuration: applying a new spec")
	s, parsed, start, companions, err := applyPending(ctx, cfg, d)
	defer companions()
	if err != nil {
		return d.fail(err)
	}
	if _, err := d.Store.MarkRunning(func(r *state.Record) {
		r.Tenant = optional(parsed.TenantID)
		r.Timeline = optional(parsed.TimelineID)
		// The record's mode follows the applied spec (POST /promote rewrites a replica's
		// config as a primary's through here).
		r.Mode = s.Mode.Type()
	}); err != nil {
		return d.fail(err)
	}
	d.status("running")
	logx.Milestone(d.logger(), logx.MsgReconfigured, "reconfigured", "apply_ms", d.now().Sub(start).Milliseconds(),
		"roles", len(s.Cluster.Roles), "databases", len(s.Cluster.Databases))
	return nil
}

// applyRefresh applies the fresh spec of a refresh (status refresh_configuration, the
// config stored as pending by compute-api) as reconfigure does: running when it worked,
// back to refresh_configuration_pending with the reason when not (the next POST
// /refresh_configuration tries again, as in compute_ctl main).
func applyRefresh(ctx context.Context, cfg Settings, d *Deps) error {
	d.status("refresh_configuration: applying the control plane's fresh spec")
	s, _, start, companions, err := applyPending(ctx, cfg, d)
	defer companions()
	if err != nil {
		d.logger().Error("refresh configuration: could not apply the fresh spec; the next request tries again", "err", err)
		if _, rerr := d.Store.RetryRefresh(state.ActorConfigure, "refresh configuration: "+err.Error()); rerr != nil {
			return fmt.Errorf("%w (and recording it: %v)", err, rerr)
		}
		d.status("refresh_configuration_pending")
		return nil
	}
	if _, err := d.Store.MarkRunning(nil); err != nil {
		return d.fail(err)
	}
	d.status("running")
	logx.Milestone(d.logger(), logx.MsgReconfigured, "reconfigured after a refresh", "apply_ms", d.now().Sub(start).Milliseconds(),
		"roles", len(s.Cluster.Roles), "databases", len(s.Cluster.Databases))
	return nil
}

// applyPending applies the pending config to the running Postgres (reconfigure's work,
// without the status moves) and makes it the applied config: configuration files first
// (as Neon: postgresql.conf is rewritten completely, and the TLS files copied again,
// which is how a renewed certificate gets in), then a reload, then the catalog. It
// returns the spec, when the catalog apply began, and the wait for pgbouncer's and
// local_proxy's settings (started in the background, as compute_ctl does, never failing
// it), which the caller calls when done (also after an error).
func applyPending(ctx context.Context, cfg Settings, d *Deps) (s *spec.ComputeSpec, parsed *spec.Parsed, start time.Time, companions func(), err error) {
	companions = func() {}
	l, err := readConfig(paths.PendingConfigFile(cfg.StateDir))
	if err != nil {
		return nil, nil, time.Time{}, companions, fmt.Errorf("reconfigure: %w", err)
	}
	raw, cc := l.Raw, l.Config
	parsed, s = l.Spec, cc.Spec
	cfg, ci, err := forSpec(cfg, parsed)
	if err != nil {
		return nil, nil, time.Time{}, companions, err
	}
	// pgbouncer and local_proxy in the background, as compute_ctl (never failing it); so
	// is the log shipping (compute_ctl does it first, and fails on it).
	waitCompanions := startCompanions(ctx, cfg, d, s, cc)
	waitShipping := startLogShipping(ctx, cfg, d, s)
	companions = func() { waitShipping(); waitCompanions() }
	// pg_hba.conf is ours only in standalone mode.
	tlsOn := false
	if tlsc := tlsfiles.Enabled(cc); tlsc != nil {
		tlsOn = reinstallTLS(ctx, cfg, *tlsc, parsed, d)
	}
	write := writePGConfig
	if parsed.Storage == spec.StorageNeon {
		write = writePostgresConf
	}
	if err := write(cfg, ci, parsed, tlsOn); err != nil {
		return nil, nil, time.Time{}, companions, fmt.Errorf("reconfigure: %w", err)
	}
	conn, err := connectRetry(ctx, cfg.Connstr, parsed.Storage == spec.StorageNeon, d.logger())
	if err != nil {
		return nil, nil, time.Time{}, companions, err
	}
	defer conn.Close(context.Background())
	if err := reloadConf(ctx, conn); err != nil {
		return nil, nil, time.Time{}, companions, fmt.Errorf("reconfigure: %w", err)
	}
	start = d.now()
	if s.Mode.IsPrimary() && !s.SkipPgCatalogUpdates {
		if err := applyAndRecord(ctx, cfg, conn, s, parsed, apply.ReconfigureConcurrency(s), d.Log); err != nil {
			return nil, nil, time.Time{}, companions, err
		}
	}
	if err := writeAppliedConfig(cfg, raw); err != nil {
		return nil, nil, time.Time{}, companions, err
	}
	return s, parsed, start, companions, nil
}

// DryRun plans the apply of a config's spec against the Postgres at cfg.Connstr and
// returns the plan's descriptions (never a password), without changing anything.
func DryRun(ctx context.Context, cfg Settings, raw []byte) ([]string, error) {
	s, parsed, err := parseForApply(raw)
	if err != nil {
		return nil, err
	}
	conn, err := pg.ConnectApply(ctx, cfg.Connstr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	actions, err := apply.DryRun(ctx, conn, s, applyOptions(cfg, parsed, 1))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		line := a.Phase + ": " + a.Describe
		if a.Database != "" {
			line = a.Phase + " [" + a.Database + "]: " + a.Describe
		}
		out = append(out, line)
	}
	return out, nil
}

// ApplyByHand applies a config file's spec to any running Postgres, outside systemd and
// without touching the compute's state; log receives the apply's progress (nil:
// slog.Default()).
func ApplyByHand(ctx context.Context, cfg Settings, raw []byte, log *slog.Logger) (apply.Result, error) {
	s, parsed, err := parseForApply(raw)
	if err != nil {
		return apply.Result{}, err
	}
	conn, err := pg.ConnectApply(ctx, cfg.Connstr)
	if err != nil {
		return apply.Result{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	opts := applyOptions(cfg, parsed, apply.StartupConcurrency(s))
	opts.Logger = log
	return apply.Apply(ctx, conn, s, opts)
}

func parseForApply(raw []byte) (*spec.ComputeSpec, *spec.Parsed, error) {
	l, err := spec.Load(raw)
	if err != nil {
		return nil, nil, err
	}
	return l.ComputeSpec(), l.Spec, nil
}

func applyOptions(cfg Settings, parsed *spec.Parsed, concurrency int) apply.Options {
	return apply.Options{
		PrivilegedRole: cfg.PrivilegedRole,
		Concurrency:    concurrency,
		Neon:           parsed.Storage == spec.StorageNeon,
		TimelineID:     parsed.TimelineID,
	}
}

// clusterSizeLifted is the temporary override that lifts Neon's cluster size limit.
const clusterSizeLifted = "neon.max_cluster_size=-1\n"

// liftClusterSize writes the temporary override before Postgres starts (neon mode,
// primary with catalog updates), so that the limit is lifted from the first connection
// on without a reload on the startup path; configure empties it after the apply.
func liftClusterSize(dir pgdata.Dir) error { return dir.WriteTempOverride(clusterSizeLifted) }

// withClusterSizeLifted runs fn (catalog work) in neon mode with the temporary override
// `neon.max_cluster_size=-1` in force, as compute_ctl does, so that a compute at its size
// limit can still be configured; the override file is emptied again afterwards, even when
// fn fails. When prepare wrote the override already (a first start), it is in force
// without a reload. In standalone mode the limit does not exist and fn just runs.
func withClusterSizeLifted(ctx context.Context, cfg Settings, p *spec.Parsed, conn *pgx.Conn, fn func() error) error {
	if p.Storage != spec.StorageNeon {
		return fn()
	}
	dir := pgdataDir(cfg, p)
	if b, err := dir.TempOverride(); err != nil || b != clusterSizeLifted {
		if err := liftClusterSize(dir); err != nil {
			return err
		}
		if err := reloadConf(ctx, conn); err != nil {
			return err
		}
	}
	ferr := fn()
	if err := dir.WriteTempOverride(""); err != nil {
		return errors.Join(ferr, err)
	}
	if err := reloadConf(ctx, conn); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}

// reloadConf makes Postgres re-read its configuration files (asynchronous, as pg_ctl
// reload).
func reloadConf(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_reload_conf()"); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}

// connectRetry connects as the admin role. Postgres has announced readiness already, so
// only a short retry covers a socket that is not there yet. In neon mode (legacy) a
// refused login goes through the zenith_admin fallback of old timelines (connectAdmin).
func connectRetry(ctx context.Context, connstr string, legacy bool, log *slog.Logger) (*pgx.Conn, error) {
	var conn *pgx.Conn
	err := retry.Do(ctx, retry.Policy{Attempts: 20, Delay: 250 * time.Millisecond}, func(ctx context.Context, _ int) error {
		c, err := connectAdmin(ctx, connstr, legacy, log)
		conn = c
		var le *legacyError
		if errors.As(err, &le) {
			return retry.Permanent(err)
		}
		return err
	})
	if err == nil {
		return conn, nil
	}
	var re *retry.Error
	if errors.As(err, &re) {
		if re.Ctx != nil {
			return nil, re.Ctx
		}
		err = re.Last
	}
	return nil, fmt.Errorf("connect to postgres: %w", err)
}
