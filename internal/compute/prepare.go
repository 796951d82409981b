package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// Prepare is `compute-init prepare`: it starts a new lifecycle, gets the config (from the
// config file, or from POST /configure through the state directory), prepares PGDATA and
// writes the Postgres configuration. On any error the status becomes failed with the reason.
func Prepare(ctx context.Context, cfg Config, d *Deps) error {
	d = d.as(state.ActorInit)
	ci, err := parseConnstr(cfg.Connstr)
	if err != nil {
		return err
	}
	raw, waited, err := obtainConfig(ctx, cfg, d)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("prepare: %w", ctx.Err())
		}
		return d.fail(err)
	}
	cc, err := spec.ParseConfig(raw)
	if err != nil {
		return d.fail(fmt.Errorf("invalid config: %w", err))
	}
	if cc.Spec == nil {
		return d.fail(errors.New("invalid config: no spec"))
	}
	parsed, err := spec.Parse(cc.Spec)
	if err != nil {
		return d.fail(fmt.Errorf("invalid spec: %w", err))
	}
	// Hand the spec to compute-configure before announcing init.
	if err := writeSpecFile(cfg, raw); err != nil {
		return d.fail(err)
	}
	now := d.now().UTC()
	if _, err := d.Store.BeginInit(func(r *state.Record) {
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
	slog.Info("spec accepted", "storage", parsed.Storage, "mode", cc.Spec.Mode.Type(),
		"roles", len(cc.Spec.Cluster.Roles), "databases", len(cc.Spec.Cluster.Databases), "from_configure", waited)
	d.status("init: preparing PGDATA")

	tlsc := tlsfiles.Enabled(cc)
	if parsed.Storage == spec.StorageNeon {
		err = prepareNeon(ctx, cfg, ci, cc.Spec, parsed, tlsc != nil, d)
	} else {
		err = prepareStandalone(ctx, cfg, ci, parsed, tlsc != nil)
	}
	if err == nil && tlsc != nil {
		err = installTLS(ctx, cfg, *tlsc, parsed, d, waitForCertificate)
	}
	if err == nil {
		err = prepareRemoteExtensions(ctx, cfg, cc.Spec, d)
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
	slog.Info("prepare done", "pgdata", cfg.PGData, "duration_ms", done.Sub(now).Milliseconds())
	return nil
}

// obtainConfig returns the raw config and whether it came through POST /configure.
func obtainConfig(ctx context.Context, cfg Config, d *Deps) ([]byte, bool, error) {
	wake, cancel := d.subscribe()
	defer cancel()
	pending := paths.PendingConfigFile(cfg.StateDir)

	// A record of an earlier lifecycle is reset; one that is fresh (empty, reset by
	// compute-api when compute.target started) or already has news for this lifecycle
	// (a /configure or a /terminate that came before we started) is kept.
	cur, reset, err := d.Store.BeginLifecycle(func() error {
		for _, f := range []string{pending, SpecFile(cfg.StateDir)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", f, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if reset {
		slog.Info("state of an earlier lifecycle reset")
	}
	// Mark the record as this run's, so that compute-api (starting in parallel) knows the
	// lifecycle has begun and stops holding back its readiness.
	if inv := os.Getenv("INVOCATION_ID"); inv != "" {
		if cur, err = d.Store.Update(func(r *state.Record) error { r.InitInvocation = inv; return nil }); err != nil {
			return nil, false, err
		}
	}
	switch {
	case cur.Status == state.ConfigurationPending:
		// POST /configure arrived before we started: take it.
		b, err := os.ReadFile(pending)
		if err != nil {
			return nil, false, fmt.Errorf("read config from /configure: %w", err)
		}
		slog.Info("using the config sent with POST /configure")
		return b, true, nil
	case cur.Status.TerminationPending():
		return nil, false, fmt.Errorf("terminated before the compute started")
	}

	if cfg.ControlPlaneURI != "" {
		client := &http.Client{Timeout: 30 * time.Second}
		cc, err := controlplane.FetchConfig(ctx, client, cfg.ControlPlaneURI, cfg.ComputeID, cfg.ControlPlaneToken,
			controlplane.WithOnRequest(d.Store.CplaneRequestHook(controlplane.RPCGetConfig)))
		if err != nil {
			return nil, false, fmt.Errorf("get config from the control plane: %w", err)
		}
		if err := writeJWKS(cfg, cc); err != nil {
			return nil, false, err
		}
		if cc.Spec != nil {
			raw, err := json.Marshal(cc)
			if err != nil {
				return nil, false, fmt.Errorf("encode config: %w", err)
			}
			slog.Info("spec received from the control plane", "uri", cfg.ControlPlaneURI)
			return raw, false, nil
		}
		slog.Info("the control plane has no spec for this compute yet; waiting for POST /configure")
	} else if cfg.ConfigFile != "" {
		b, err := os.ReadFile(cfg.ConfigFile)
		switch {
		case err == nil:
			cc, perr := spec.ParseConfig(b)
			if perr != nil {
				return nil, false, fmt.Errorf("invalid config file %s: %w", cfg.ConfigFile, perr)
			}
			if cc.Spec != nil {
				slog.Info("spec read from the config file", "path", cfg.ConfigFile)
				return b, false, nil
			}
			slog.Info("config file has no spec; waiting for POST /configure", "path", cfg.ConfigFile)
		case errors.Is(err, fs.ErrNotExist):
			slog.Info("no config file; waiting for POST /configure", "path", cfg.ConfigFile)
		default:
			return nil, false, fmt.Errorf("read config file: %w", err)
		}
	}
	d.status("empty: waiting for POST /configure")
	r, err := d.Store.Wait(ctx, wake, 10*time.Second, func(r state.Record) bool {
		return r.Status != state.Empty
	})
	if err != nil {
		return nil, false, err
	}
	if r.Status != state.ConfigurationPending {
		return nil, false, fmt.Errorf("stopped waiting for a spec: status is %s", r.Status)
	}
	b, err := os.ReadFile(pending)
	if err != nil {
		return nil, false, fmt.Errorf("read config from /configure: %w", err)
	}
	return b, true, nil
}

// prepareStandalone creates PGDATA with initdb on first start (kept across restarts) and
// writes the Postgres configuration.
func prepareStandalone(ctx context.Context, cfg Config, ci connInfo, p *spec.Parsed, tls bool) error {
	if err := ensureInitdb(ctx, cfg, ci); err != nil {
		return err
	}
	if err := writePostgresEnv(cfg, ""); err != nil {
		return err
	}
	return writePGConfig(cfg, ci, p, tls)
}

// writePostgresConf writes postgresql.conf (both modes: it is regenerated at every start)
// and makes sure the temp override file exists. tls turns on ssl with the files
// installTLS copies into PGDATA.
func writePostgresConf(cfg Config, ci connInfo, p *spec.Parsed, tls bool) error {
	overcommit, _ := os.ReadFile("/proc/sys/vm/overcommit_memory")
	conf := pgconf.PostgresqlConf(p, pgconf.Options{
		Port:               ci.Port,
		SocketDir:          ci.SocketDir,
		ListenAddresses:    "*",
		InternalHTTPPort:   cfg.InternalHTTPPort,
		PrivilegedRoleName: cfg.PrivilegedRole,
		OvercommitMemory2:  strings.TrimSpace(string(overcommit)) == "2",
		TLS:                tls,
	})
	if err := atomicfile.Write(filepath.Join(cfg.PGData, "postgresql.conf"), []byte(conf), pgdataFile(p)); err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	// The temp override file Neon includes last; it must exist for include_if_exists to
	// be quiet and for later steps to write into.
	override := filepath.Join(cfg.PGData, pgconf.TempOverrideFile)
	if _, err := os.Stat(override); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.Write(override, nil, pgdataFile(p)); err != nil {
			return fmt.Errorf("write temp override: %w", err)
		}
	}
	return nil
}

// pgdataFile is how files in PGDATA are written: without fsync in neon mode, where PGDATA
// is rebuilt at every start and a flush would only cost time on the startup path.
func pgdataFile(p *spec.Parsed) atomicfile.Options {
	return atomicfile.Options{Mode: 0o600, NoSync: p.Storage == spec.StorageNeon}
}

// writePGConfig (re)writes postgresql.conf, pg_hba.conf and pg_ident.conf of a standalone
// compute.
func writePGConfig(cfg Config, ci connInfo, p *spec.Parsed, tls bool) error {
	if err := writePostgresConf(cfg, ci, p, tls); err != nil {
		return err
	}
	hba, err := pgconf.HBAStandalone(ci.User)
	if err != nil {
		return err
	}
	ident, err := pgconf.IdentStandalone(ci.User, []string{paths.DefaultPGUser, "root"})
	if err != nil {
		return err
	}
	files := []struct {
		name, body string
	}{
		{"pg_hba.conf", hba},
		{"pg_ident.conf", ident},
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(cfg.PGData, f.name), []byte(f.body), atomicfile.Options{Mode: 0o600}); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

func ensureInitdb(ctx context.Context, cfg Config, ci connInfo) error {
	if _, err := os.Stat(filepath.Join(cfg.PGData, "PG_VERSION")); err == nil {
		slog.Info("PGDATA exists, keeping it", "pgdata", cfg.PGData)
		return nil
	}
	if ents, err := os.ReadDir(cfg.PGData); err == nil && len(ents) > 0 {
		return fmt.Errorf("PGDATA %s is not empty but has no PG_VERSION; refusing to touch it", cfg.PGData)
	}
	start := time.Now()
	slog.Info("running initdb", "pgdata", cfg.PGData, "superuser", ci.User)
	_, err := execx.Run(ctx, execx.Cmd{
		Path: paths.Sibling(cfg.PGBin, "initdb"),
		Args: []string{"-D", cfg.PGData, "-U", ci.User, "--auth-local=peer", "--auth-host=scram-sha-256",
			"-E", "UTF8", "--locale=C.UTF-8"},
		User: cfg.OSUser,
	})
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	slog.Info("initdb done", "duration_ms", time.Since(start).Milliseconds())
	return nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func writeJWKS(cfg Config, cc *spec.ComputeConfig) error {
	if cc.ComputeCtlConfig == nil || len(cc.ComputeCtlConfig.JWKS) == 0 {
		return nil
	}
	if err := atomicfile.Write(paths.JWKSFile(cfg.StateDir), cc.ComputeCtlConfig.JWKS, atomicfile.Options{Mode: 0o644}); err != nil {
		return fmt.Errorf("store jwks: %w", err)
	}
	return nil
}

// writeSpecFile stores the effective config for the configure step (0640: it holds
// password hashes).
func writeSpecFile(cfg Config, raw []byte) error {
	if err := atomicfile.Write(SpecFile(cfg.StateDir), raw, atomicfile.Options{Mode: 0o640}); err != nil {
		return fmt.Errorf("store spec: %w", err)
	}
	return nil
}
