package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/redact"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ActionError is the failure of one action. Its text and the error it wraps are
// redacted: they never contain the action's password.
type ActionError struct {
	// Index is the position of the failed action; the actions before it ran.
	Index    int
	Phase    string
	Describe string
	// Code is the SQLSTATE when the server refused the statement.
	Code string
	msg  string
	err  error
}

func (e *ActionError) Error() string { return "apply: " + e.Describe + ": " + e.msg }

// Unwrap returns a redacted copy of the server error (*pgconn.PgError), the context's
// error, or a redacted error.
func (e *ActionError) Unwrap() error { return e.err }

func newActionError(ctx context.Context, a Action, err error) *ActionError {
	red := func(s string) string { return redact.String(s, a.redact...) }
	ae := &ActionError{Phase: a.Phase, Describe: a.Describe}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		c := *pgErr
		c.Message, c.Detail, c.Hint, c.Where = red(c.Message), red(c.Detail), red(c.Hint), red(c.Where)
		c.InternalQuery, c.ConstraintName = red(c.InternalQuery), red(c.ConstraintName)
		ae.Code, ae.err = c.Code, &c
		ae.msg = c.Error()
	case ctx.Err() != nil:
		ae.err = ctx.Err()
		ae.msg = ctx.Err().Error()
	default:
		ae.msg = red(err.Error())
		ae.err = errors.New(ae.msg)
	}
	return ae
}

// Execute runs actions in order on conn with the simple protocol (one statement each, so
// CREATE DATABASE runs outside a transaction block). Before the first Secret action it
// makes the session quiet (pg.QuietSession) and refuses to go on if it cannot. It stops at
// the first failing action and returns an *ActionError whose Index says how many ran.
// log receives one line per action (nil: slog.Default()).
func Execute(ctx context.Context, conn *pgx.Conn, actions []Action, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	quiet := false
	for i, a := range actions {
		if a.Secret && !quiet {
			if err := pg.QuietSession(ctx, conn); err != nil {
				return &ActionError{Index: i, Phase: a.Phase, Describe: a.Describe, msg: err.Error(), err: err}
			}
			quiet = true
		}
		start := time.Now()
		_, err := conn.Exec(ctx, a.SQL, pgx.QueryExecModeSimpleProtocol)
		// Milliseconds with microsecond precision: most statements take less than one, and
		// the neon start benchmark sums them (test/system/bench_test.go).
		tookMs := float64(time.Since(start).Microseconds()) / 1000
		if err != nil {
			ae := newActionError(ctx, a, err)
			ae.Index = i
			log.Error("apply action failed", "phase", a.Phase, "action", a.Describe,
				"action_ms", tookMs, "err", ae.msg)
			return ae
		}
		log.Info("apply action", "phase", a.Phase, "database", a.Database, "action", a.Describe, "action_ms", tookMs)
	}
	return nil
}

// DatabaseError is the failure of the per-database work in one database.
type DatabaseError struct {
	Database string
	Err      error
}

func (e *DatabaseError) Error() string {
	return fmt.Sprintf("apply: in database %q: %s", e.Database, strings.TrimPrefix(e.Err.Error(), "apply: "))
}

// Unwrap returns the underlying error (often an *ActionError).
func (e *DatabaseError) Unwrap() error { return e.Err }

// Result counts the actions that ran, per phase.
type Result struct {
	PerPhase map[string]int
	Total    int
	// Databases is the number of databases whose per-database work completed.
	Databases int
	// DBFingerprints, after a successful Apply, has the fingerprint of the per-database
	// work of every target database that may need any (see Options.SkipUnchanged).
	DBFingerprints map[string]string
	// DBsUnchanged is how many databases were skipped as unchanged (Options.SkipUnchanged).
	DBsUnchanged int
	// DBsIdle is how many databases were skipped because nothing could be done there.
	DBsIdle int
}

// recorder counts actions from several goroutines.
type recorder struct {
	mu  sync.Mutex
	res Result
	log *slog.Logger
}

func newRecorder(log *slog.Logger) *recorder {
	if log == nil {
		log = slog.Default()
	}
	return &recorder{res: Result{PerPhase: map[string]int{}}, log: log}
}

func (r *recorder) add(actions []Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range actions {
		r.res.PerPhase[a.Phase]++
		r.res.Total++
	}
}

func (r *recorder) database() {
	r.mu.Lock()
	r.res.Databases++
	r.mu.Unlock()
}

func (r *recorder) result() Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.res
	out.PerPhase = cloneMap(r.res.PerPhase)
	return out
}

func count(actions []Action) Result {
	r := newRecorder(nil)
	r.add(actions)
	return r.result()
}

// execute runs actions and records those that ran.
func (r *recorder) execute(ctx context.Context, conn *pgx.Conn, actions []Action) error {
	err := Execute(ctx, conn, actions, r.log)
	var ae *ActionError
	switch {
	case err == nil:
		r.add(actions)
	case errors.As(err, &ae):
		r.add(actions[:ae.Index])
	}
	return err
}

// Apply brings the server in line with s, in Neon's order (apply_spec_sql in
// compute_tools/src/spec_apply.rs):
//
//  1. read the catalog and plan every main-connection phase; a planning error runs
//     nothing;
//  2. drop the subscriptions of the databases that delete_db operations drop;
//  3. run the main phases (privileged role … schema neon) on conn;
//  4. in every target database (Targets), at most opts.Concurrency at a time, read the
//     per-database catalog, plan (PlanDB) and run;
//  5. run the final phases (extensions, health_check, drop roles, subscriptions record,
//     audit) on conn.
//
// The Result counts the actions that ran, also when one failed.
func Apply(ctx context.Context, conn *pgx.Conn, s *spec.ComputeSpec, opts Options) (Result, error) {
	rec := newRecorder(opts.Logger)
	log := rec.log
	cat, err := ReadCatalog(ctx, conn)
	if err != nil {
		return rec.result(), fmt.Errorf("apply: %w", err)
	}
	actions, err := Plan(s, cat, opts)
	if err != nil {
		return rec.result(), fmt.Errorf("apply: %w", err)
	}
	mainActions, final := splitStages(actions)
	targets, skipped, err := Targets(s, cat, Simulate(cat, mainActions), opts)
	if err != nil {
		return rec.result(), fmt.Errorf("apply: %w", err)
	}
	if !NeonExtensionAvailable(cat) {
		log.Info("extension neon is not available (vanilla PostgreSQL): skipping phase " + PhaseHandleNeonExtension)
	}
	for _, sk := range skipped {
		log.Warn("apply: skipping per-database work", "database", sk.Name, "reason", sk.Reason)
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = StartupConcurrency(s)
	}
	log.Info("apply plan", "main_actions", len(mainActions), "final_actions", len(final),
		"databases", len(targets), "concurrency", conc)

	if drop := droppingTargets(s, cat); len(drop) > 0 {
		if err := forEachDB(ctx, conn, opts, drop, conc, rec, nil); err != nil {
			return rec.result(), err
		}
	}
	if err := rec.execute(ctx, conn, mainActions); err != nil {
		return rec.result(), err
	}
	after := Simulate(cat, mainActions)
	if createdDatabase(after) {
		// Databases the main phases created have their OIDs only now.
		oids, err := readDatabaseOIDs(ctx, conn)
		if err != nil {
			return rec.result(), fmt.Errorf("apply: %w", err)
		}
		for name, d := range after.Databases {
			d.OID = oids[name]
			after.Databases[name] = d
		}
	}
	prints := make(map[string]string, len(targets))
	var todo []DBTarget
	unchanged, idle := 0, 0
	for _, t := range targets {
		if !mayNeedWork(t, cat) {
			idle++
			continue
		}
		fp := dbFingerprint(t, after)
		prints[t.Name] = fp
		// Subscriptions to drop are never skipped: whether they are due depends on the
		// timeline, and a branch inherits the parent's record.
		if old, ok := cat.AppliedDBs[t.Name]; opts.SkipUnchanged && ok && old == fp && !t.DropSubscriptions && dbUntouched(t.Name, cat, after) {
			unchanged++
			continue
		}
		todo = append(todo, t)
	}
	if unchanged > 0 || idle > 0 {
		log.Info("apply: per-database work skipped", "unchanged_since_last_apply", unchanged, "nothing_to_do", idle)
	}
	if err := forEachDB(ctx, conn, opts, todo, conc, rec, nil); err != nil {
		return rec.result(), err
	}
	if err := rec.execute(ctx, conn, final); err != nil {
		return rec.result(), err
	}
	if !maps.Equal(prints, cat.AppliedDBs) {
		if err := recordAppliedDBs(ctx, conn, prints); err != nil {
			// Only an optimisation is lost: the next apply does full per-database work.
			log.Warn("apply: could not record the applied databases", "table", AppliedDBsTable, "err", err)
		}
	}
	res := rec.result()
	res.DBFingerprints = prints
	res.DBsUnchanged = unchanged
	res.DBsIdle = idle
	return res, nil
}

// createdDatabase reports whether the catalog has a database without an OID: one the
// main phases created (Simulate cannot know its OID).
func createdDatabase(c *Catalog) bool {
	for _, d := range c.Databases {
		if d.OID == 0 {
			return true
		}
	}
	return false
}

// mayNeedWork reports whether per-database work can plan anything in the target. In a
// spec database the schema permissions depend on what is inside, so it may; in the
// system database and the others only a deleted role that exists or subscriptions to
// drop give work, and without them the database is not even connected to.
func mayNeedWork(t DBTarget, cat *Catalog) bool {
	if t.Kind == DBUser || t.DropSubscriptions {
		return true
	}
	for _, r := range t.DeleteRoles {
		if _, ok := cat.Roles[r]; ok {
			return true
		}
	}
	return false
}

// dbFingerprint sums up what the per-database work of a target depends on besides the
// database's own contents: the target (owner, roles to delete, subscriptions, privileged
// and admin roles), the database's owner after the main phases, and its OID (a database
// dropped and created again by hand is a new one).
func dbFingerprint(t DBTarget, after *Catalog) string {
	h := sha256.New()
	d := after.Databases[t.Name]
	fmt.Fprintf(h, "%q|%d|%q|%q|%v|%q|%q|%q|%d", t.Name, t.Kind, t.Owner, t.DeleteRoles, t.DropSubscriptions,
		t.PrivilegedRole, t.AdminRoles, d.Owner, d.OID)
	return hex.EncodeToString(h.Sum(nil))
}

// dbUntouched reports whether the main phases leave the database as it was (it existed
// before, with the same owner).
func dbUntouched(name string, before, after *Catalog) bool {
	b, ok := before.Databases[name]
	return ok && b.Owner == after.Databases[name].Owner
}

// recordAppliedDBs replaces the contents of AppliedDBsTable with prints, in one
// transaction. The table is created on first use, owned by the admin role; nobody else
// gets privileges on it.
func recordAppliedDBs(ctx context.Context, conn *pgx.Conn, prints map[string]string) error {
	names := make([]string, 0, len(prints))
	fps := make([]string, 0, len(prints))
	for _, n := range slices.Sorted(maps.Keys(prints)) {
		names = append(names, n)
		fps = append(fps, prints[n])
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"CREATE TABLE IF NOT EXISTS " + AppliedDBsTable + " (datname text PRIMARY KEY, fingerprint text NOT NULL)", nil},
			{"REVOKE ALL ON " + AppliedDBsTable + " FROM PUBLIC", nil},
			{"DELETE FROM " + AppliedDBsTable + " WHERE datname <> ALL($1::text[])", []any{names}},
			{"INSERT INTO " + AppliedDBsTable + " (datname, fingerprint) SELECT * FROM unnest($1::text[], $2::text[]) " +
				"ON CONFLICT (datname) DO UPDATE SET fingerprint = excluded.fingerprint", []any{names, fps}},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// DryRun plans everything Apply would run now, without running it: the main and final
// phases, and the per-database work planned against each database as it is now (so it is
// exact only when the main phases plan nothing, as after a complete Apply). Actions come
// in execution order, databases in target order.
func DryRun(ctx context.Context, conn *pgx.Conn, s *spec.ComputeSpec, opts Options) ([]Action, error) {
	cat, err := ReadCatalog(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	actions, err := Plan(s, cat, opts)
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	mainActions, final := splitStages(actions)
	targets, _, err := Targets(s, cat, Simulate(cat, mainActions), opts)
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	var mu sync.Mutex
	perDB := map[string][]Action{}
	collect := func(t DBTarget, a []Action) {
		mu.Lock()
		perDB[t.Name+"\x00"+t.Kind.String()] = a
		mu.Unlock()
	}
	drop := droppingTargets(s, cat)
	var out []Action
	if err := forEachDB(ctx, conn, opts, drop, 1, nil, collect); err != nil {
		return nil, err
	}
	for _, t := range drop {
		out = append(out, perDB[t.Name+"\x00"+t.Kind.String()]...)
	}
	out = append(out, mainActions...)
	var existing []DBTarget
	for _, t := range targets {
		if _, ok := cat.Databases[t.Name]; ok {
			existing = append(existing, t)
		}
	}
	if err := forEachDB(ctx, conn, opts, existing, 1, nil, collect); err != nil {
		return nil, err
	}
	for _, t := range existing {
		out = append(out, perDB[t.Name+"\x00"+t.Kind.String()]...)
	}
	return append(out, final...), nil
}

// forEachDB does the per-database work in every target, at most conc at a time. With
// collect set, it only plans and hands the plan to collect. The first failure cancels the
// work not yet started; every failure is returned, each naming its database.
func forEachDB(ctx context.Context, conn *pgx.Conn, opts Options, targets []DBTarget, conc int,
	rec *recorder, collect func(DBTarget, []Action)) error {
	if conc < 1 {
		conc = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := oneDB(ctx, conn, opts, t, rec, collect); err != nil {
				mu.Lock()
				errs = append(errs, &DatabaseError{Database: t.Name, Err: err})
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if len(errs) == 0 && ctx.Err() != nil {
		// Cancelled from outside before every database was done.
		return fmt.Errorf("apply: per-database work: %w", ctx.Err())
	}
	// Failures caused by the cancellation only repeat the first one.
	var real []error
	for _, e := range errs {
		if !errors.Is(e, context.Canceled) || ctx.Err() == nil {
			real = append(real, e)
		}
	}
	if len(real) == 0 {
		real = errs
	}
	return errors.Join(real...)
}

func oneDB(ctx context.Context, conn *pgx.Conn, opts Options, t DBTarget, rec *recorder,
	collect func(DBTarget, []Action)) error {
	dbConn, err := connectDB(ctx, conn, opts, t.Name)
	if err != nil {
		return err
	}
	defer dbConn.Close(context.Background())
	dbCat, err := ReadDBCatalog(ctx, dbConn)
	if err != nil {
		return err
	}
	actions, err := PlanDB(t, dbCat)
	if err != nil {
		return err
	}
	if collect != nil {
		collect(t, actions)
		return nil
	}
	if err := rec.execute(ctx, dbConn, actions); err != nil {
		return err
	}
	rec.database()
	return nil
}

// connectDB opens a connection to database db: with opts.Connstr when set, else with the
// main connection's configuration.
func connectDB(ctx context.Context, conn *pgx.Conn, opts Options, db string) (*pgx.Conn, error) {
	var cfg *pgx.ConnConfig
	if opts.Connstr != "" {
		c, err := pg.ApplyConfig(opts.Connstr)
		if err != nil {
			return nil, err
		}
		cfg = c
	} else {
		cfg = conn.Config().Copy()
	}
	cfg.Database = db
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if v := c.PgConn().ParameterStatus("standard_conforming_strings"); v != "on" {
		if _, err := c.Exec(ctx, "SET standard_conforming_strings = on"); err != nil {
			c.Close(context.Background())
			return nil, fmt.Errorf("set standard_conforming_strings: %w", err)
		}
	}
	return c, nil
}
