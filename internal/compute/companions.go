package compute

import (
	"context"
	"log/slog"
	"sync"

	"github.com/computetools/compute-tools/internal/localproxy"
	"github.com/computetools/compute-tools/internal/pgbouncer"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// The companions are the processes beside Postgres that the spec configures: pgbouncer
// (pgbouncer_settings) and Neon's local_proxy (local_proxy_config). As compute_ctl does,
// the configure step hands them their settings in the background at a start and at a
// reconfiguration (a failure is logged, never the compute's), and at a start of a primary
// with catalog updates writes local_proxy's config once more after the apply, where a
// failure fails the start. The step waits for the background work before it exits.

// startCompanions starts the background configuration of pgbouncer and local_proxy for
// s; wait returns when it is done.
func startCompanions(ctx context.Context, cfg Settings, d *Deps, s *spec.ComputeSpec, cc *spec.ComputeConfig) (wait func()) {
	var wg sync.WaitGroup
	tls := tlsfiles.Enabled(cc)
	log := d.logger()
	if s.PgbouncerSettings != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tunePgbouncer(ctx, cfg, *s.PgbouncerSettings, tls, log)
		}()
	}
	if s.LocalProxyConfig != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := configureLocalProxy(ctx, cfg, d, s.LocalProxyConfig, tls); err != nil {
				log.Error("could not configure local_proxy; the compute goes on", "err", err)
			}
		}()
	}
	return wg.Wait
}

// tunePgbouncer applies pgbouncer_settings, logging the outcome; nothing fails.
func tunePgbouncer(ctx context.Context, cfg Settings, settings spec.OrderedStringMap, tls *spec.TLSConfig, log *slog.Logger) {
	log.Info("tuning pgbouncer", "ini", cfg.PgbouncerIni, "settings", len(settings))
	err := pgbouncer.Apply(ctx, pgbouncer.Options{IniPath: cfg.PgbouncerIni, Connstr: cfg.PgbouncerConnstr,
		Password: cfg.PgbouncerPassword, Log: log}, settings, tls)
	if err != nil {
		log.Error("could not tune pgbouncer; the compute goes on", "err", err)
	}
}

// configureLocalProxy writes local_proxy's config (with the compute's TLS files when it
// has TLS, as compute_ctl) and tells a running local_proxy to reload it.
func configureLocalProxy(ctx context.Context, cfg Settings, d *Deps, lp *spec.LocalProxySpec, tls *spec.TLSConfig) error {
	c := *lp
	if tls != nil {
		t := *tls
		c.TLS = &t
	}
	return localproxy.Configure(ctx, localProxyOptions(cfg, d), &c)
}

func localProxyOptions(cfg Settings, d *Deps) localproxy.Options {
	o := localproxy.Options{ConfigPath: cfg.LocalProxyConfig, PidFile: cfg.LocalProxyPidFile, Log: d.logger()}
	if d.LocalProxyUnits != nil {
		o.Unit, o.Units = cfg.LocalProxyUnit, d.LocalProxyUnits
	}
	return o
}
