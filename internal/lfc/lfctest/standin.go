// Package lfctest holds test helpers for LFC prewarm and offload: a stand-in `neon`
// extension of our own, installed into a test database of a real PostgreSQL (its LFC
// functions with the real names and argument types of Neon's pgxn/neon/neon--1.5--1.6.sql,
// their behaviour set through a control table), and Storage, an httptest fake of endpoint
// storage that can answer 200, 404, 500, hang, or send a corrupt or truncated body.
// It is imported only by tests.
package lfctest

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The stand-in. Neon's extension is C; ours is PL/pgSQL over neon.lfc_standin (one row):
//   - get_local_cache_state(max_chunks integer default null) returns bytea: the row's
//     state (NULL = an empty LFC), or raises state_error;
//   - prewarm_local_cache(state bytea, n_workers integer default 1) returns void (STRICT):
//     sleeps prewarm_sleep seconds (holding no lock), raises prewarm_error, else keeps
//     the state it got in last_prewarmed, counts the call in prewarm_calls and sets
//     prewarmed_pages = total_pages - skipped_pages;
//   - get_prewarm_info(out total_pages, out prewarmed_pages, out skipped_pages,
//     out active_workers integer) returns record (STRICT), or raises info_error.
//
// The extension's catalog entry is made by hand (pg_extension row, functions added with
// ALTER EXTENSION ... ADD), since PostgreSQL 15 finds control files only in its share
// directory, which tests must not touch: the entry lives in the test database alone.
const standinSQL = `
CREATE SCHEMA IF NOT EXISTS neon;
CREATE TABLE neon.lfc_standin (
	id boolean PRIMARY KEY DEFAULT true CHECK (id),
	state bytea,
	state_error text,
	total_pages integer NOT NULL DEFAULT 0,
	prewarmed_pages integer NOT NULL DEFAULT 0,
	skipped_pages integer NOT NULL DEFAULT 0,
	prewarm_sleep float8 NOT NULL DEFAULT 0,
	prewarm_error text,
	info_error text,
	last_prewarmed bytea,
	prewarm_calls integer NOT NULL DEFAULT 0
);
INSERT INTO neon.lfc_standin DEFAULT VALUES;

CREATE FUNCTION neon.get_local_cache_state(max_chunks integer default null) RETURNS bytea
LANGUAGE plpgsql PARALLEL UNSAFE AS $f$
DECLARE r neon.lfc_standin;
BEGIN
	SELECT * INTO r FROM neon.lfc_standin;
	IF r.state_error IS NOT NULL THEN RAISE EXCEPTION '%', r.state_error; END IF;
	RETURN r.state;
END $f$;

CREATE FUNCTION neon.prewarm_local_cache(state bytea, n_workers integer default 1) RETURNS void
LANGUAGE plpgsql STRICT PARALLEL UNSAFE AS $f$
DECLARE r neon.lfc_standin;
BEGIN
	SELECT * INTO r FROM neon.lfc_standin;
	IF r.prewarm_sleep > 0 THEN PERFORM pg_catalog.pg_sleep(r.prewarm_sleep); END IF;
	IF r.prewarm_error IS NOT NULL THEN RAISE EXCEPTION '%', r.prewarm_error; END IF;
	UPDATE neon.lfc_standin SET last_prewarmed = prewarm_local_cache.state, prewarm_calls = prewarm_calls + 1,
		prewarmed_pages = total_pages - skipped_pages;
END $f$;

CREATE FUNCTION neon.get_prewarm_info(out total_pages integer, out prewarmed_pages integer,
	out skipped_pages integer, out active_workers integer) RETURNS record
LANGUAGE plpgsql STRICT PARALLEL SAFE AS $f$
DECLARE r neon.lfc_standin;
BEGIN
	SELECT * INTO r FROM neon.lfc_standin;
	IF r.info_error IS NOT NULL THEN RAISE EXCEPTION '%', r.info_error; END IF;
	total_pages := r.total_pages;
	prewarmed_pages := r.prewarmed_pages;
	skipped_pages := r.skipped_pages;
	active_workers := 0;
END $f$;

INSERT INTO pg_catalog.pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
VALUES (pg_catalog.pg_nextoid('pg_catalog.pg_extension', 'oid', 'pg_catalog.pg_extension_oid_index'),
	'neon', (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user),
	'neon'::regnamespace, true, '1.6');
ALTER EXTENSION neon ADD FUNCTION neon.get_local_cache_state(integer);
ALTER EXTENSION neon ADD FUNCTION neon.prewarm_local_cache(bytea, integer);
ALTER EXTENSION neon ADD FUNCTION neon.get_prewarm_info();
`

// Install creates the stand-in neon extension in the database conn is connected to (as
// a superuser). A schema neon may exist already (a compute creates one), but not the
// stand-in's objects or a neon extension.
func Install(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, standinSQL); err != nil {
		return fmt.Errorf("lfctest: install the stand-in neon extension: %w", err)
	}
	return nil
}

// Control sets the stand-in's behaviour through its own connection.
type Control struct{ Conn *pgx.Conn }

func (c Control) set(ctx context.Context, sql string, args ...any) error {
	if _, err := c.Conn.Exec(ctx, "UPDATE neon.lfc_standin SET "+sql, args...); err != nil {
		return fmt.Errorf("lfctest: %s: %w", sql, err)
	}
	return nil
}

// SetState sets what get_local_cache_state returns (nil: NULL, an empty LFC).
func (c Control) SetState(ctx context.Context, state []byte) error {
	return c.set(ctx, "state = $1", state)
}

// FailState makes get_local_cache_state raise msg ("" = stop failing).
func (c Control) FailState(ctx context.Context, msg string) error {
	return c.set(ctx, "state_error = NULLIF($1, '')", msg)
}

// SetProgress sets what get_prewarm_info reports.
func (c Control) SetProgress(ctx context.Context, total, prewarmed, skipped int32) error {
	return c.set(ctx, "total_pages = $1, prewarmed_pages = $2, skipped_pages = $3", total, prewarmed, skipped)
}

// PrewarmSleep makes prewarm_local_cache sleep d first.
func (c Control) PrewarmSleep(ctx context.Context, d time.Duration) error {
	return c.set(ctx, "prewarm_sleep = $1", d.Seconds())
}

// FailPrewarm makes prewarm_local_cache raise msg ("" = stop failing).
func (c Control) FailPrewarm(ctx context.Context, msg string) error {
	return c.set(ctx, "prewarm_error = NULLIF($1, '')", msg)
}

// FailInfo makes get_prewarm_info raise msg ("" = stop failing).
func (c Control) FailInfo(ctx context.Context, msg string) error {
	return c.set(ctx, "info_error = NULLIF($1, '')", msg)
}

// LastPrewarmed returns the state the last successful prewarm_local_cache received and
// how many calls succeeded.
func (c Control) LastPrewarmed(ctx context.Context) (state []byte, calls int, err error) {
	err = c.Conn.QueryRow(ctx, "SELECT last_prewarmed, prewarm_calls FROM neon.lfc_standin").Scan(&state, &calls)
	if err != nil {
		return nil, 0, fmt.Errorf("lfctest: read the stand-in: %w", err)
	}
	return state, calls, nil
}
