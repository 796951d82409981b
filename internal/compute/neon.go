package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/safekeeper"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// prepareNeon does compute_ctl's prepare_pgdata for neon storage (compute_tools/src/compute.rs):
// a fresh PGDATA, postgresql.conf, the safekeeper sync for a primary, the basebackup, and
// the finishing touches (signal file, our pg_hba.conf and pg_ident.conf, pg_dynshmem,
// standby.signal).
func prepareNeon(ctx context.Context, cfg Settings, ci connInfo, s *spec.ComputeSpec, p *spec.Parsed, tls bool, d *Deps) error {
	dir := pgdataDir(cfg, p)
	if err := dir.PrepareFresh(); err != nil {
		return err
	}
	if err := writePostgresConf(cfg, ci, p, tls); err != nil {
		return err
	}
	if s.Mode.IsPrimary() && !s.SkipPgCatalogUpdates {
		if err := liftClusterSize(dir); err != nil {
			return err
		}
	}
	if err := writeNeonAuthToken(cfg, p.StorageAuthToken); err != nil {
		return err
	}

	lsn := "0/0" // replica: the latest
	switch {
	case s.Mode.IsPrimary():
		d.status("init: syncing safekeepers")
		start := time.Now()
		synced, ok, err := safekeeper.CheckSynced(ctx, p.SafekeeperConnstrings, p.TenantID, p.TimelineID, p.StorageAuthToken, d.Log)
		if err != nil {
			return fmt.Errorf("safekeeper check: %w", err)
		}
		checkMs := ms(time.Since(start))
		var syncMs uint64
		if ok {
			lsn = synced
			d.logger().Info("safekeepers are in sync", "lsn", lsn, "check_ms", checkMs)
		} else {
			start = time.Now()
			lsn, err = safekeeper.SyncWithRetries(ctx, safekeeper.SyncOptions{PGBin: cfg.PGBin, PGData: cfg.PGData,
				Token: p.StorageAuthToken, Timeout: cfg.SyncSafekeepersTimeout, Log: d.Log})
			if err != nil {
				return err // it says "sync safekeepers: ..."
			}
			syncMs = ms(time.Since(start))
			d.logger().Info("safekeepers synced", "lsn", lsn, "sync_ms", syncMs)
		}
		if _, err := d.Store.Update(func(r *state.Record) error {
			r.Metrics.SyncSKCheckMs = checkMs
			r.Metrics.SyncSafekeepersMs = syncMs
			return nil
		}); err != nil {
			return err
		}
	default:
		if l, ok := s.Mode.StaticLSN(); ok {
			lsn = l.String()
		}
	}

	d.status("init: basebackup")
	st, err := pageserver.Basebackup(ctx, pageserver.BasebackupOptions{
		PGData: cfg.PGData, Protocol: p.Pageserver.Prefer, Connstr: p.Pageserver.Shard0URL(),
		ShardID: p.Pageserver.ShardID(0), Token: p.StorageAuthToken,
		TenantID: p.TenantID, TimelineID: p.TimelineID, LSN: lsn, Mode: s.Mode.Type(),
		Attempts: cfg.BasebackupAttempts, IdleTimeout: cfg.PageserverIdleTimeout, Logger: d.Log,
	})
	if err != nil {
		return fmt.Errorf("basebackup: %w", err)
	}
	d.logger().Info("basebackup done", "bytes", st.Bytes, "basebackup_ms", st.Duration.Milliseconds(),
		"connect_us", st.ConnectMicros, "attempts", st.Attempts, "lsn", lsn)
	if _, err := d.Store.Update(func(r *state.Record) error {
		r.Metrics.PageserverConnectMicros = uint64(st.ConnectMicros)
		r.Metrics.BasebackupBytes = uint64(st.Bytes)
		r.Metrics.BasebackupMs = ms(st.Duration)
		return nil
	}); err != nil {
		return err
	}
	// zenith_admin logs in as the admin role does, for the fallback of old timelines
	// (connectAdmin); where the role does not exist the lines admit no one.
	auth := adminAuth(ci)
	auth.LegacyRoles = []string{paths.LegacyAdminRole}
	return dir.FinishNeon(s.Mode.Type(), auth)
}

// writeNeonAuthToken writes (neon mode, with a token) or removes the storage token file
// that compute-postgres.service's start reads as NEON_AUTH_TOKEN (paths.NeonAuthTokenFile).
func writeNeonAuthToken(cfg Settings, token string) error {
	path := paths.NeonAuthTokenFile(cfg.StateDir)
	if token == "" {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	if strings.ContainsAny(token, "\r\n\x00") {
		return errors.New("storage auth token: contains a line break or NUL")
	}
	if err := atomicfile.Write(path, []byte(token+"\n"), atomicfile.Options{Mode: 0o600}); err != nil {
		return fmt.Errorf("write storage token for postgres: %w", err)
	}
	return nil
}

// finalSync is the last step of a primary's termination in neon mode: the safekeepers'
// LSN after Postgres stopped, which /terminate answers with.
func finalSync(ctx context.Context, cfg Settings, log *slog.Logger) (string, error) {
	l, err := readAppliedConfig(cfg)
	if err != nil {
		return "", err
	}
	return safekeeper.Sync(ctx, cfg.PGBin, cfg.PGData, l.Spec.StorageAuthToken, cfg.SyncSafekeepersTimeout, log)
}
