// Package filecache resizes Neon's local file cache (LFC) for the vm-monitor, as Neon's
// libs/vm_monitor/src/filecache.rs does: it reads the cap neon.max_file_cache_size
// (pg_size_bytes(current_setting(...))), caps the size it is asked for, and runs
//
//	ALTER SYSTEM SET neon.file_cache_size_limit = '<n>MB'
//	SELECT pg_reload_conf()
//
// on a connection it keeps open (application_name vm-monitor, as compute_ctl's
// --filecache-connstr), opening a fresh one and trying once more when the old one broke.
// The size is computed by the caller (sizing.FileCache.Size).
//
// Only when the neon extension defines the setting: its library defines
// neon.file_cache_size_limit (an integer in MB, listed in pg_settings) when it is loaded.
// On vanilla PostgreSQL (standalone mode) the name is unknown, or at most a placeholder
// (a dotted name set in postgresql.conf or with -c while no library defines it, which
// is what a neon spec's settings give there): a placeholder is a string that nothing
// reads, so resizing it would change nothing. In both cases Set does nothing but say so
// (Result.Reason, and an info line); Probe tells the cases apart (Setting.Known,
// Setting.Defined).
//
// An unchanged size is not set again: when the size to set is the one this PG set last
// and the server's current value shows it, Set answers Applied (and Unchanged) without
// ALTER SYSTEM and reload, so an agent that reconnects (each connection sizes the cache)
// costs one query. Both conditions are needed: the server's value alone can be stale
// for a moment after a reload (a backend reads the new configuration at its next
// command), and our record alone misses a Postgres restarted with a fresh PGDATA.
//
// The value is written with its unit ('<n>MB'): for the real setting (GUC_UNIT_MB) that
// is the same as the reference's bare integer. A value given on the command line (-c,
// the postmaster's argv) outranks postgresql.auto.conf, so after the reload
// current_setting still shows the command line's value; our units pass none.
//
// Permissions: ALTER SYSTEM needs a superuser (or, from PostgreSQL 15, GRANT ALTER
// SYSTEM ON PARAMETER neon.file_cache_size_limit) and pg_reload_conf() a superuser or
// an EXECUTE grant; the admin role (cloud_admin) has both.
//
// Where this differs from the reference, on purpose:
//   - An unknown or placeholder neon.file_cache_size_limit, or no
//     neon.max_file_cache_size, is a no-op with a reason, not an error: the reference's
//     queries fail, which fails the vm-monitor's start and every scaling request.
//   - The value is written as '<n>MB' (see above) instead of a bare integer.
//   - An unchanged size is not written again (see above); the reference runs ALTER
//     SYSTEM and a reload every time.
//   - All of probe, ALTER SYSTEM and reload are retried once on a fresh connection when
//     the connection broke (the reference retries the first query only).
//
// Resizing is off when the spec says disable_lfc_resizing (ResizingDisabled): as in the
// reference, the vm-monitor then does not touch the LFC at all, neither at start nor on
// scaling; the caller gives the policy no file cache.
package filecache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/vmmonitor/sizing"
)

const (
	// AppName is the application_name of the connection (compute_ctl's default
	// --filecache-connstr has application_name=vm-monitor).
	AppName = "vm-monitor"
	// LimitSetting is the LFC's size limit, in MB, reloadable.
	LimitSetting = "neon.file_cache_size_limit"
	// MaxSetting caps LimitSetting; set at server start.
	MaxSetting = "neon.max_file_cache_size"
)

// ResizingDisabled reports whether the spec turns the vm-monitor's LFC resizing off
// (disable_lfc_resizing: true).
func ResizingDisabled(s *spec.ComputeSpec) bool {
	return s != nil && s.DisableLFCResizing != nil && *s.DisableLFCResizing
}

// Setting is what the server says about the LFC settings.
type Setting struct {
	// Known: the server has neon.file_cache_size_limit (defined or a placeholder).
	Known bool
	// Defined: a loaded library defines it (it is in pg_settings); false for a
	// placeholder.
	Defined bool
	// LimitBytes is the current limit; MaxBytes the cap (valid when HaveMax).
	LimitBytes, MaxBytes uint64
	HaveMax              bool
}

// Result says what Set did.
type Result struct {
	// Applied: ALTER SYSTEM and the reload ran.
	Applied bool
	// Bytes is the size set, a whole number of MiB (when Applied).
	Bytes uint64
	// Capped: the size asked for was above neon.max_file_cache_size (MaxBytes).
	Capped   bool
	MaxBytes uint64
	// Unchanged: Applied without ALTER SYSTEM and reload, the size being set already.
	Unchanged bool
	// Reason says why nothing was done (when not Applied).
	Reason string
}

// PG resizes the LFC of one Postgres. It is safe for concurrent use (calls run one at a
// time).
type PG struct {
	connstr string
	log     *slog.Logger
	// limitName and maxName are LimitSetting and MaxSetting (tests point them at
	// settings vanilla PostgreSQL defines).
	limitName, maxName string

	mu   sync.Mutex
	conn *pgx.Conn
	// lastMiB is the size the last successful ALTER SYSTEM wrote (when haveLast).
	lastMiB  uint64
	haveLast bool
}

// New returns a PG for the Postgres that connstr reaches as a superuser (the admin
// role). It connects on first use. log nil means slog.Default().
func New(connstr string, log *slog.Logger) *PG {
	if log == nil {
		log = slog.Default()
	}
	return &PG{connstr: connstr, log: log, limitName: LimitSetting, maxName: MaxSetting}
}

// Close closes the connection, if one is open.
func (p *PG) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop()
}

func (p *PG) drop() {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.conn.Close(ctx)
	p.conn = nil
}

// do runs f on the open connection (opening one if needed); when f fails because the
// connection broke, it runs f once more on a fresh connection.
func (p *PG) do(ctx context.Context, f func(*pgx.Conn) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if p.conn == nil || p.conn.IsClosed() {
			p.drop()
			conn, err := pg.Connect(ctx, p.connstr, AppName)
			if err != nil {
				return err
			}
			p.conn = conn
		}
		err := f(p.conn)
		if err == nil {
			return nil
		}
		broken := p.conn.IsClosed() || pgconn.SafeToRetry(err)
		if attempt > 0 || !broken || ctx.Err() != nil {
			if broken {
				p.drop()
			}
			return err
		}
		p.log.Warn("postgres connection broke, retrying on a new one", "err", err)
		p.drop()
	}
}

const probeSQL = `SELECT current_setting($1, true) IS NOT NULL,
	EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE name = $1),
	pg_catalog.pg_size_bytes(current_setting($1, true)),
	pg_catalog.pg_size_bytes(current_setting($2, true))`

func (p *PG) probe(ctx context.Context, conn *pgx.Conn) (Setting, error) {
	var s Setting
	var limit, maxBytes *int64
	if err := conn.QueryRow(ctx, probeSQL, p.limitName, p.maxName).Scan(&s.Known, &s.Defined, &limit, &maxBytes); err != nil {
		return Setting{}, fmt.Errorf("read %s and %s: %w", p.limitName, p.maxName, err)
	}
	if limit != nil && *limit > 0 {
		s.LimitBytes = uint64(*limit)
	}
	if maxBytes != nil {
		s.HaveMax = true
		if *maxBytes > 0 {
			s.MaxBytes = uint64(*maxBytes)
		}
	}
	return s, nil
}

// settingIdent quotes a setting's name for ALTER SYSTEM: each dotted part an
// identifier ("neon"."file_cache_size_limit" names neon.file_cache_size_limit).
func settingIdent(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

// Probe reads the LFC settings.
func (p *PG) Probe(ctx context.Context) (Setting, error) {
	var s Setting
	err := p.do(ctx, func(conn *pgx.Conn) error {
		var err error
		s, err = p.probe(ctx, conn)
		return err
	})
	return s, err
}

// Set sets the LFC size limit to bytes, capped by neon.max_file_cache_size and rounded
// down to a whole MiB, and reloads the configuration. When the neon extension does not
// define the settings it does nothing and says why (Result.Reason); that is not an
// error. An unchanged size is not written again (see the package comment).
func (p *PG) Set(ctx context.Context, bytes uint64) (Result, error) {
	var res Result
	err := p.do(ctx, func(conn *pgx.Conn) error {
		res = Result{}
		s, err := p.probe(ctx, conn)
		if err != nil {
			return err
		}
		switch {
		case !s.Known:
			res.Reason = p.limitName + " is not a setting of this server (no neon extension)"
			return nil
		case !s.Defined:
			res.Reason = p.limitName + " is only a placeholder here (the neon extension's library is not loaded), so resizing it would change nothing"
			return nil
		case !s.HaveMax:
			res.Reason = p.maxName + " is not set, so the cache cannot be capped"
			return nil
		}
		mib, capped := sizing.CapMiB(bytes, s.MaxBytes)
		if p.haveLast && p.lastMiB == mib && s.LimitBytes == mib*sizing.MiB {
			res = Result{Applied: true, Unchanged: true, Bytes: mib * sizing.MiB, Capped: capped, MaxBytes: s.MaxBytes}
			p.log.Debug("file cache size unchanged", "size_mib", mib)
			return nil
		}
		p.haveLast = false
		// mib is an integer we formatted: nothing to quote. ALTER SYSTEM takes no
		// parameters and cannot run in a transaction; Exec without arguments sends a
		// simple query.
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = '%dMB'", settingIdent(p.limitName), mib)); err != nil {
			return fmt.Errorf("set %s: %w", p.limitName, err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_reload_conf()"); err != nil {
			return fmt.Errorf("reload the configuration: %w", err)
		}
		p.lastMiB, p.haveLast = mib, true
		res = Result{Applied: true, Bytes: mib * sizing.MiB, Capped: capped, MaxBytes: s.MaxBytes}
		p.log.Info("updated file cache size", "size_mib", mib, "max_mib", s.MaxBytes/sizing.MiB,
			"capped", capped, "was_mib", s.LimitBytes/sizing.MiB)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if !res.Applied {
		p.log.Info("file cache not resized", "reason", res.Reason, "wanted_mib", bytes/sizing.MiB)
	}
	return res, nil
}
