package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/pg"
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
	red := func(s string) string {
		for _, sec := range a.redact {
			if sec != "" {
				s = strings.ReplaceAll(s, sec, "<redacted>")
			}
		}
		return s
	}
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
func Execute(ctx context.Context, conn *pgx.Conn, actions []Action) error {
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
		took := time.Since(start)
		if err != nil {
			ae := newActionError(ctx, a, err)
			ae.Index = i
			slog.Error("apply action failed", "phase", a.Phase, "action", a.Describe,
				"duration", took, "error", ae.msg)
			return ae
		}
		slog.Info("apply action", "phase", a.Phase, "action", a.Describe, "duration", took)
	}
	return nil
}

// Result counts the actions that ran, per phase.
type Result struct {
	PerPhase map[string]int
	Total    int
}

func count(actions []Action) Result {
	res := Result{PerPhase: map[string]int{}}
	for _, a := range actions {
		res.PerPhase[a.Phase]++
		res.Total++
	}
	return res
}

// Apply reads the catalog, plans and executes. A planning error runs nothing. The Result
// counts the actions that ran, also when an action failed.
func Apply(ctx context.Context, conn *pgx.Conn, s *spec.ComputeSpec, opts Options) (Result, error) {
	cat, err := ReadCatalog(ctx, conn)
	if err != nil {
		return count(nil), fmt.Errorf("apply: %w", err)
	}
	actions, err := Plan(s, cat, opts)
	if err != nil {
		return count(nil), fmt.Errorf("apply: %w", err)
	}
	slog.Info("apply plan", "actions", len(actions))
	if err := Execute(ctx, conn, actions); err != nil {
		var ae *ActionError
		if errors.As(err, &ae) {
			return count(actions[:ae.Index]), err
		}
		return count(nil), err
	}
	return count(actions), nil
}
