package compute

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// Prepare is `compute-init prepare`: it starts a new lifecycle, gets the config (from the
// config file, or from POST /configure through the state directory), prepares PGDATA and
// writes the Postgres configuration. On any error the status becomes failed with the reason.
func Prepare(ctx context.Context, cfg Settings, d *Deps) error {
	d = d.as(state.ActorInit)
	ci, err := parseConnstr(cfg.Connstr)
	if err != nil {
		return err
	}
	// A pooled VM (no config yet) warms up while it waits; whatever runs of it when the
	// config comes is aborted, and waited for only here, as Prepare ends.
	w := newWarmer(cfg, d.logger())
	defer w.finish()
	got, err := obtainConfig(ctx, cfg, d, w)
	w.sweep()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("prepare: %w", ctx.Err())
		}
		return d.fail(err)
	}
	raw, cc, parsed, waited := got.Raw, got.Config, got.Spec, got.fromConfigure
	// A setup that cannot work fails here, with one line that says why.
	if cfg, ci, err = forSpec(cfg, parsed); err != nil {
		return d.fail(err)
	}
	if err := checkPGBin(cfg.PGBin); err != nil {
		return d.fail(err)
	}
	if err := checkPortFree(ci.Port, ci.SocketDir); err != nil {
		return d.fail(err)
	}
	// Hand the config to compute-configure (as the applied config) before announcing init.
	if err := writeAppliedConfig(cfg, raw); err != nil {
		return d.fail(err)
	}
	now := d.now().UTC()
	var from state.Status
	if _, err := d.Store.BeginInit(func(r *state.Record) {
		from = r.Status
		if waited {
			r.Metrics.WaitForSpecMs = ms(now.Sub(r.StartTime))
			r.StartTime = now // as Neon: total_startup_ms excludes the wait
		}
		r.Tenant = optional(parsed.TenantID)
		r.Timeline = optional(parsed.TimelineID)
		r.Mode = cc.Spec.Mode.Type()
		r.Storage = parsed.Storage
		r.SetError("")
	}); err != nil {
		return d.fail(err)
	}
	attrs := []any{"storage", parsed.Storage, "mode", cc.Spec.Mode.Type(),
		"roles", len(cc.Spec.Cluster.Roles), "databases", len(cc.Spec.Cluster.Databases), "from_configure", waited}
	if from != state.Empty {
		// compute-api logged the milestone when POST /configure moved the status to
		// configuration_pending (whichever config won a race with the file or the
		// control plane: one acceptance, one milestone).
		d.logger().Info("spec accepted", attrs...)
	} else {
		logx.Milestone(d.logger(), logx.MsgConfigAccepted, "spec accepted", attrs...)
	}
	d.status("init: preparing PGDATA")

	tlsc := tlsfiles.Enabled(cc)
	vmDone := startVMHelpers(ctx, cfg, cc.Spec, d)
	if parsed.Storage == spec.StorageNeon {
		err = prepareNeon(ctx, cfg, ci, cc.Spec, parsed, tlsc != nil, d)
	} else {
		err = prepareStandalone(ctx, cfg, ci, parsed, tlsc != nil, d.logger())
	}
	if vmErr := vmDone(); err == nil {
		err = vmErr
	}
	if err == nil && tlsc != nil {
		err = installTLS(ctx, cfg, *tlsc, parsed, d, waitForCertificate)
	}
	if err == nil {
		err = prepareRemoteExtensions(ctx, cfg, cc.Spec, d)
	}
	if err == nil {
		// Before Postgres starts, as compute_ctl: the first audit lines are shipped.
		// A neon PGDATA is new at every start: the old audit positions go.
		err = shipLogs(ctx, cfg, cc.Spec, d, true, parsed.Storage == spec.StorageNeon)
	}
	if err != nil {
		return d.fail(err)
	}
	done := d.now().UTC()
	if _, err := d.Store.Update(func(r *state.Record) error {
		r.PrepareDoneAt = &done
		return nil
	}); err != nil {
		return d.fail(err)
	}
	d.status("init: PGDATA ready, starting postgres")
	d.logger().Info("prepare done", "pgdata", cfg.PGData, "prepare_ms", done.Sub(now).Milliseconds())
	return nil
}

// obtainConfig begins the new lifecycle and returns the config of this start, from the
// first of configSources that has one.
func obtainConfig(ctx context.Context, cfg Settings, d *Deps, w *warmer) (*acquired, error) {
	wake, cancel := d.subscribe()
	defer cancel()
	pending := paths.PendingConfigFile(cfg.StateDir)

	// A record of an earlier lifecycle is reset; one that is fresh (empty, reset by
	// compute-api when compute.target started) or already has news for this lifecycle
	// (a /configure or a /terminate that came before we started) is kept.
	cur, reset, err := d.Store.BeginLifecycle(d.actor, func() error {
		for _, f := range []string{pending, paths.AppliedConfigFile(cfg.StateDir)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", f, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if reset {
		d.logger().Info("state of an earlier lifecycle reset")
	}
	// Mark the record as this run's, so that compute-api (starting in parallel) knows the
	// lifecycle has begun and stops holding back its readiness.
	if inv := os.Getenv("INVOCATION_ID"); inv != "" {
		if cur, err = d.Store.Update(func(r *state.Record) error { r.InitInvocation = inv; return nil }); err != nil {
			return nil, err
		}
	}
	if cur.Status.TerminationPending() {
		return nil, fmt.Errorf("terminated before the compute started")
	}
	return firstConfig(ctx, cur, configSources(cfg, d, wake, w))
}

// prepareStandalone creates PGDATA with initdb on first start (kept across restarts) and
// writes the Postgres configuration.
func prepareStandalone(ctx context.Context, cfg Settings, ci connInfo, p *spec.Parsed, tls bool, log *slog.Logger) error {
	if err := ensureInitdb(ctx, cfg, ci, log); err != nil {
		return err
	}
	if err := writeNeonAuthToken(cfg, ""); err != nil {
		return err
	}
	return writePGConfig(cfg, ci, p, tls)
}

// writePostgresConf writes postgresql.conf (both modes: it is regenerated at every start)
// and makes sure the temp override file exists. tls turns on ssl with the files
// installTLS copies into PGDATA.
func writePostgresConf(cfg Settings, ci connInfo, p *spec.Parsed, tls bool) error {
	overcommit, _ := os.ReadFile("/proc/sys/vm/overcommit_memory")
	return pgdataDir(cfg, p).WritePostgresConf(p, pgconf.Options{
		Port:               ci.Port,
		SocketDir:          ci.SocketDir,
		ListenAddresses:    "*",
		InternalHTTPPort:   cfg.InternalHTTPPort,
		PrivilegedRoleName: cfg.PrivilegedRole,
		OvercommitMemory2:  strings.TrimSpace(string(overcommit)) == "2",
		TLS:                tls,
	})
}

// pgdataDir is PGDATA as this compute writes it: without fsync in neon mode, where
// PGDATA is rebuilt at every start and a flush would only cost time on the startup path.
func pgdataDir(cfg Settings, p *spec.Parsed) pgdata.Dir {
	return pgdata.Dir{Path: cfg.PGData, NoSync: p.Storage == spec.StorageNeon}
}

// writePGConfig (re)writes postgresql.conf, pg_hba.conf and pg_ident.conf of a standalone
// compute.
func writePGConfig(cfg Settings, ci connInfo, p *spec.Parsed, tls bool) error {
	if err := writePostgresConf(cfg, ci, p, tls); err != nil {
		return err
	}
	return pgdataDir(cfg, p).WriteAuth(adminAuth(ci))
}

// adminAuth is who may log in as the admin role (both modes): the connection string's
// user, over the unix socket, as one of paths.AdminOSUsers.
func adminAuth(ci connInfo) pgdata.Auth {
	return pgdata.Auth{AdminRole: ci.User, OSUsers: paths.AdminOSUsers()}
}

// ensureInitdb creates the standalone cluster on first start; an existing one is kept.
func ensureInitdb(ctx context.Context, cfg Settings, ci connInfo, log *slog.Logger) error {
	dir := pgdata.Dir{Path: cfg.PGData}
	if dir.Initialized() {
		log.Info("PGDATA exists, keeping it", "pgdata", cfg.PGData)
		return nil
	}
	start := time.Now()
	log.Info("running initdb", "pgdata", cfg.PGData, "superuser", ci.User)
	if err := dir.Initdb(ctx, pgdata.InitdbOptions{
		Initdb: paths.Sibling(cfg.PGBin, "initdb"), Superuser: ci.User, OSUser: cfg.OSUser,
	}); err != nil {
		return err
	}
	log.Info("initdb done", "initdb_ms", time.Since(start).Milliseconds())
	return nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// writeAppliedConfig stores the effective config for the configure step (0640: it holds
// password hashes).
func writeAppliedConfig(cfg Settings, raw []byte) error {
	if err := atomicfile.Write(paths.AppliedConfigFile(cfg.StateDir), raw, atomicfile.Options{Mode: 0o640}); err != nil {
		return fmt.Errorf("store applied config: %w", err)
	}
	return nil
}
