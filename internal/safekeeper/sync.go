package safekeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/redact"
	"github.com/computetools/compute-tools/internal/spec"
)

// DefaultSyncTimeout bounds one `--sync-safekeepers` run. compute_ctl waits for it without
// a bound, and the walproposer in sync mode retries forever while no quorum of
// safekeepers answers: without a bound, safekeepers that are down keep a compute in init
// (and a /terminate in termination) for good.
const DefaultSyncTimeout = 5 * time.Minute

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
		return "", fmt.Errorf("sync safekeepers: no answer within %s (no quorum of safekeepers reachable?); killed (stdout: %q)", timeout, out)
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
