package safekeeper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/redact"
	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
)

// DefaultSyncTimeout bounds one `--sync-safekeepers` run. compute_ctl waits for it without
// a bound, and the walproposer in sync mode retries forever while no quorum of
// safekeepers answers: without a bound, safekeepers that are down keep a compute in init
// (and a /terminate in termination) for good.
const DefaultSyncTimeout = 5 * time.Minute

// ErrSyncTimeout is wrapped by Sync's error when the run was killed at its timeout.
var ErrSyncTimeout = errors.New("sync timed out")

// Sync runs `<pgbin> --sync-safekeepers` as the current user with PGDATA=pgdata (the
// binary takes no -D) and NEON_AUTH_TOKEN=token when token is set, and returns the LSN the
// safekeepers agreed on: the process's trimmed stdout. A non-zero exit is an error that
// quotes stdout; the token never appears in logs or errors. The process is killed when it
// has not finished within timeout (DefaultSyncTimeout when <= 0); it is not retried, as in
// compute_ctl. log receives the progress (nil: slog.Default()).
func Sync(ctx context.Context, pgbin, pgdata, token string, timeout time.Duration, log *slog.Logger) (lsn string, err error) {
	if log == nil {
		log = slog.Default()
	}
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env := []string{"PGDATA=" + pgdata}
	var secrets []string
	if token != "" {
		env = append(env, "NEON_AUTH_TOKEN="+token)
		secrets = append(secrets, token)
	}
	res, err := execx.Run(ctx, execx.Cmd{
		Path:    pgbin,
		Args:    []string{"--sync-safekeepers"},
		Env:     env,
		Secrets: secrets,
		Log:     log,
	})
	out := excerpt(redact.String(strings.TrimSpace(string(res.Stdout)), secrets...))
	if stderr := redact.String(strings.TrimSpace(string(res.Stderr)), secrets...); stderr != "" {
		log.Info("sync-safekeepers output", "stderr", stderr)
	}
	if err != nil && parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "", fmt.Errorf("sync safekeepers: no answer within %s (no quorum of safekeepers reachable?); killed (stdout: %q): %w", timeout, out, ErrSyncTimeout)
	}
	if err != nil {
		return "", fmt.Errorf("sync safekeepers: %w (stdout: %q)", err, out)
	}
	l, err := spec.ParseLsn(out)
	if err != nil {
		return "", fmt.Errorf("sync safekeepers: bad output: %w", err)
	}
	log.Info("sync-safekeepers done", "lsn", l.String(), "sync_ms", res.Duration.Milliseconds())
	return l.String(), nil
}

// excerpt keeps error texts short when a process prints a lot.
func excerpt(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// SyncRetries is how often SyncWithRetries runs --sync-safekeepers again after a failure
// (compute_ctl main's sync_safekeepers_with_retries: 5).
const SyncRetries = 5

// SyncOptions are the arguments of SyncWithRetries.
type SyncOptions struct {
	PGBin, PGData string
	Token         string // secret
	// Timeout bounds each run (DefaultSyncTimeout when <= 0).
	Timeout time.Duration
	Log     *slog.Logger
	// Sleep waits between runs (nil: a timer that ends with ctx); tests inject it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// SyncBackoff is the pause after the failed run n (0-based) of compute_ctl main's
// sync_safekeepers_with_retries (utils::backoff with its defaults): 1.1^n seconds, at
// most 3 s, and none after the first run (n = 0).
func SyncBackoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(math.Min(math.Pow(1.1, float64(n)), 3) * float64(time.Second))
}

// SyncWithRetries is Sync at start, retried as compute_ctl main does: up to SyncRetries
// more runs after a failure, with SyncBackoff's pauses. Unlike compute_ctl, a run killed
// at its timeout is not run again (it already waited the whole bound: five more would
// keep the compute in init for half an hour), nor is a binary that is missing; a
// cancelled context ends the retries. Each failed run is logged with its error.
func SyncWithRetries(ctx context.Context, o SyncOptions) (string, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	sleep := o.Sleep
	if sleep == nil {
		sleep = retry.Sleep
	}
	for attempt := 0; ; attempt++ {
		lsn, err := Sync(ctx, o.PGBin, o.PGData, o.Token, o.Timeout, log)
		if err == nil {
			if attempt > 0 {
				log.Info("sync-safekeepers succeeded after retries", "retries", attempt)
			}
			return lsn, nil
		}
		switch {
		case ctx.Err() != nil:
			return "", err
		case errors.Is(err, ErrSyncTimeout), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
			log.Warn("sync-safekeepers failed; not retried", "attempt", attempt+1, "err", err)
			return "", err
		case attempt >= SyncRetries:
			log.Warn("sync-safekeepers still failing; giving up", "retries", attempt, "err", err)
			return "", fmt.Errorf("%w (after %d retries)", err, attempt)
		}
		wait := SyncBackoff(attempt)
		log.Warn("sync-safekeepers failed; retrying", "attempt", attempt+1, "retry_in_ms", wait.Milliseconds(), "err", err)
		if err := sleep(ctx, wait); err != nil {
			return "", fmt.Errorf("sync safekeepers: %w", err)
		}
	}
}
