// Package promote carries out the Postgres side of promoting a replica to a primary
// (POST /promote; Neon's compute_tools/src/compute_promote.rs), over the admin
// connection: wait until the replica has replayed the old primary's last WAL
// (pg_last_wal_replay_lsn(), a bounded number of looks), point the neon extension at the
// old primary's safekeepers (ALTER SYSTEM SET neon.safekeepers, then a reload: in neon
// mode only, see Run.Neon), pg_promote(), and check on a new connection that
// transactions are no longer read-only. What comes around it (the state record, the
// config rewritten as a primary, joining concurrent calls) is internal/control's.
//
// Unlike compute_ctl, the safekeepers value is quoted as an SQL literal (compute_ctl
// formats it into the statement as it is), Postgres not in recovery is a clear error
// (compute_ctl's query of the replay LSN gets NULL there and its task panics), and the
// error of a replay that does not catch up names both LSNs.
package promote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
)

// AppName is the application_name of the promotion's connections.
const AppName = "compute_ctl:promote"

// The replay wait of compute_ctl: 21 looks (the first and 20 retries), 1 s apart.
const (
	DefaultRetries  = 20
	DefaultInterval = time.Second
)

// Options configure a Postgres.
type Options struct {
	// Connstr is the admin connection string (the one compute-init and the monitor use).
	Connstr string
	// Retries and Interval bound the wait for the replay: 1+Retries looks, Interval apart
	// (defaults: compute_ctl's 20 and 1 s).
	Retries  int
	Interval time.Duration
	// Sleep waits d or until ctx ends (default: a timer); tests inject their own.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Postgres promotes the compute's Postgres.
type Postgres struct{ o Options }

// New returns a Postgres for o, with defaults filled in.
func New(o Options) *Postgres {
	if o.Retries <= 0 {
		o.Retries = DefaultRetries
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Postgres{o: o}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ErrNotInRecovery is Promote's error for a Postgres that is not a standby.
var ErrNotInRecovery = errors.New("postgres is not in recovery: not a replica")

// CatchUpError is a replay that did not reach the old primary's LSN in time.
type CatchUpError struct {
	Retries        int
	Replayed, Want spec.Lsn
}

func (e *CatchUpError) Error() string {
	// compute_ctl's text, then the two LSNs.
	return fmt.Sprintf("didn't catch up with primary in %d retries: replayed up to %s, wal_flush_lsn %s", e.Retries, e.Replayed, e.Want)
}

// Run says how to promote.
type Run struct {
	// Resume: an earlier attempt of this lifecycle's promotion exists (left running by a
	// compute-api that was stopped, or failed after pg_promote, in the config rewrite); a
	// Postgres already out of recovery is then taken as promoted by it (the wait and
	// pg_promote are skipped, the read-only check is not). Without it, a Postgres out of
	// recovery is ErrNotInRecovery.
	Resume bool
	// Neon: the compute runs Neon's Postgres (neon mode), whose neon extension defines
	// neon.safekeepers; the safekeepers are set before pg_promote, as compute_ctl does.
	// Vanilla PostgreSQL 15 (standalone mode) refuses ALTER SYSTEM for a parameter it
	// does not know, and has no safekeepers to stream to: the step is skipped there, with
	// a log line.
	Neon bool
}

// Result says what Promote did.
type Result struct {
	// AlreadyPromoted: Postgres was out of recovery already (Run.Resume set): an earlier
	// attempt promoted it.
	AlreadyPromoted bool
	// Replayed is the replay LSN that satisfied the wait (zero when AlreadyPromoted).
	Replayed spec.Lsn
	// LSNWaitMs, PromoteMs are how long the replay wait and pg_promote took.
	LSNWaitMs, PromoteMs int64
}

// Promote promotes the replica once it has replayed up to req.WALFlushLSN, with
// req.Safekeepers as its neon.safekeepers (run.Neon); see Run. Errors are those of
// compute_ctl, with the step in front.
func (p *Postgres) Promote(ctx context.Context, req promotestate.Request, run Run) (Result, error) {
	log := p.o.Logger
	var res Result
	conn, err := pg.Connect(ctx, p.o.Connstr, AppName)
	if err != nil {
		return res, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer conn.Close(context.Background())

	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return res, fmt.Errorf("checking recovery: %w", err)
	}
	if !inRecovery {
		if !run.Resume {
			return res, ErrNotInRecovery
		}
		log.Info("postgres is out of recovery already: promoted by an earlier attempt of this promotion")
		res.AlreadyPromoted = true
	} else {
		start := time.Now()
		if res.Replayed, err = p.waitReplay(ctx, conn, req.WALFlushLSN); err != nil {
			return res, err
		}
		res.LSNWaitMs = time.Since(start).Milliseconds()
		if err := p.setSafekeepers(ctx, conn, req.Safekeepers, run.Neon); err != nil {
			return res, err
		}
		start = time.Now()
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT * FROM pg_catalog.pg_promote()").Scan(&ok); err != nil {
			return res, fmt.Errorf("pg_promote: %w", err)
		}
		if !ok {
			return res, errors.New("pg_promote() returned false")
		}
		res.PromoteMs = time.Since(start).Milliseconds()
	}

	// A new session, as compute_ctl: the old one began in recovery.
	check, err := pg.Connect(ctx, p.o.Connstr, AppName)
	if err != nil {
		return res, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer check.Close(context.Background())
	var ro string
	if err := check.QueryRow(ctx, "SHOW transaction_read_only").Scan(&ro); err != nil {
		return res, fmt.Errorf("getting transaction_read_only: %w", err)
	}
	if ro == "on" {
		return res, errors.New("replica in read only mode after promotion")
	}
	return res, nil
}

// waitReplay looks at the replay LSN until it reaches want: 1+Retries looks, Interval
// apart.
func (p *Postgres) waitReplay(ctx context.Context, conn *pgx.Conn, want spec.Lsn) (spec.Lsn, error) {
	var replayed spec.Lsn
	for i := 0; i <= p.o.Retries; i++ {
		var text *string
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_last_wal_replay_lsn()::text").Scan(&text); err != nil {
			return replayed, fmt.Errorf("getting last replay lsn: %w", err)
		}
		if text == nil {
			return replayed, errors.New("getting last replay lsn: postgres has replayed no WAL")
		}
		lsn, err := spec.ParseLsn(*text)
		if err != nil {
			return replayed, fmt.Errorf("getting last replay lsn: %w", err)
		}
		replayed = lsn
		if replayed >= want {
			return replayed, nil
		}
		p.o.Logger.Info("replica behind the primary", "try", i, "replica_lsn", replayed.String(), "primary_lsn", want.String())
		if i == p.o.Retries {
			break
		}
		if err := p.o.Sleep(ctx, p.o.Interval); err != nil {
			return replayed, fmt.Errorf("waiting for the replay: %w", err)
		}
	}
	return replayed, &CatchUpError{Retries: p.o.Retries, Replayed: replayed, Want: want}
}

// setSafekeepers points the neon extension at the safekeepers before the promotion, as
// compute_ctl does (ALTER SYSTEM, since a replica has none in its postgresql.conf), and
// reloads. Standalone mode skips it (Run.Neon).
func (p *Postgres) setSafekeepers(ctx context.Context, conn *pgx.Conn, safekeepers string, neon bool) error {
	if !neon {
		p.o.Logger.Info("standalone mode: neon.safekeepers not set (no safekeepers; vanilla Postgres does not know the parameter)")
		return nil
	}
	lit, err := pg.Literal(safekeepers)
	if err != nil {
		return fmt.Errorf("setting safekeepers: %w", err)
	}
	// ALTER SYSTEM takes no parameters.
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET neon.safekeepers = "+lit); err != nil {
		return fmt.Errorf("setting safekeepers: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_reload_conf()"); err != nil {
		return fmt.Errorf("reloading postgres config: %w", err)
	}
	return nil
}

// ResetSafekeepers removes the ALTER SYSTEM setting of neon.safekeepers that Promote
// made (postgresql.auto.conf) and reloads, once postgresql.conf carries the same value:
// a setting left there would override every later spec's safekeepers. (Standalone mode
// made none; there it resets nothing but costs a connection.)
func (p *Postgres) ResetSafekeepers(ctx context.Context) error {
	conn, err := pg.Connect(ctx, p.o.Connstr, AppName)
	if err != nil {
		return fmt.Errorf("connecting to postgres: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "ALTER SYSTEM RESET neon.safekeepers"); err != nil {
		return fmt.Errorf("resetting safekeepers: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_reload_conf()"); err != nil {
		return fmt.Errorf("reloading postgres config: %w", err)
	}
	return nil
}
