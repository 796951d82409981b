// Package safekeeper finds the LSN a primary compute must start from: first by asking the
// safekeepers for their timeline status (TIMELINE_STATUS over the Postgres wire protocol)
// and, when they are not in agreement, by running `postgres --sync-safekeepers`.
//
// Unlike compute_ctl, the --sync-safekeepers run is bounded (DefaultSyncTimeout): without
// a quorum the walproposer retries forever.
package safekeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/redact"
	"github.com/computetools/compute-tools/internal/spec"
)

// PingTimeout bounds one safekeeper ping: connect, authenticate and query.
const PingTimeout = 100 * time.Millisecond

// TimelineStatus is one safekeeper's answer to TIMELINE_STATUS.
type TimelineStatus struct {
	// Known is false when the safekeeper answered without a row: it does not know the
	// timeline.
	Known     bool
	FlushLSN  spec.Lsn
	CommitLSN spec.Lsn
}

// Quorum is the number of answers a decision needs among n safekeepers.
func Quorum(n int) int { return n/2 + 1 }

// Decide says whether the answers of a quorum of n safekeepers agree on one LSN: every
// answer knows the timeline, all commit LSNs are equal, all flush LSNs are equal and the
// commit LSN equals the flush LSN. Fewer answers than a quorum is never synced.
func Decide(n int, answers []TimelineStatus) (spec.Lsn, bool) {
	if n <= 0 || len(answers) < Quorum(n) {
		return 0, false
	}
	first := answers[0]
	for _, a := range answers {
		if !a.Known || a.CommitLSN != first.CommitLSN || a.FlushLSN != first.FlushLSN {
			return 0, false
		}
	}
	if first.CommitLSN != first.FlushLSN {
		return 0, false
	}
	return first.CommitLSN, true
}

// CheckSynced asks the safekeepers (each "host:port") concurrently for the status of the
// timeline, as user no_user with token as the password, each ping limited to PingTimeout.
// It stops as soon as a quorum answered or a quorum can no longer be reached, and reports
// the common LSN when the answers agree (see Decide). A safekeeper that fails or is slow
// only counts as missing; the error is for a cancelled ctx. log receives the outcome
// (nil: slog.Default()).
func CheckSynced(ctx context.Context, connstrs []string, tenant, timeline, token string, log *slog.Logger) (lsn string, synced bool, err error) {
	return checkSynced(ctx, connstrs, tenant, timeline, token, PingTimeout, log)
}

func checkSynced(ctx context.Context, connstrs []string, tenant, timeline, token string, timeout time.Duration, log *slog.Logger) (string, bool, error) {
	if log == nil {
		log = slog.Default()
	}
	n := len(connstrs)
	if n == 0 {
		return "", false, nil
	}
	quorum := Quorum(n)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		addr string
		st   TimelineStatus
		err  error
	}
	results := make(chan result, n) // buffered: pings left running never block
	for _, addr := range connstrs {
		go func() {
			st, err := ping(ctx, addr, tenant, timeline, token, timeout)
			results <- result{addr: addr, st: st, err: err}
		}()
	}

	var answers []TimelineStatus
	failures := 0
	for len(answers) < quorum && failures <= n-quorum {
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("check safekeepers: %w", ctx.Err())
		case r := <-results:
			if r.err != nil {
				failures++
				log.Warn("safekeeper ping failed", "safekeeper", r.addr, "err", r.err)
				continue
			}
			answers = append(answers, r.st)
		}
	}
	if err := parent.Err(); err != nil {
		// Pings failed because the caller gave up, not because of the safekeepers.
		return "", false, fmt.Errorf("check safekeepers: %w", err)
	}
	l, ok := Decide(n, answers)
	if !ok {
		log.Info("safekeepers not synced", "safekeepers", n, "answers", len(answers), "failures", failures)
		return "", false, nil
	}
	log.Info("safekeepers synced", "safekeepers", n, "answers", len(answers), "lsn", l.String())
	return l.String(), true, nil
}

// ping asks one safekeeper for the timeline status.
func ping(ctx context.Context, addr, tenant, timeline, token string, timeout time.Duration) (TimelineStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		// Neon builds postgresql://no_user@<connstr>: no port means the default one.
		host, portStr = addr, "5432"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("invalid safekeeper address %q", addr)
	}
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("connection config: %w", err)
	}
	// Nothing from the PG* environment or ~/.pgpass: the target is fully specified.
	cfg.Host = host
	cfg.Port = uint16(port)
	cfg.User = "no_user"
	cfg.Password = token
	cfg.Database = ""
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{
		"options": fmt.Sprintf("-c timeline_id=%s tenant_id=%s", timeline, tenant),
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("connect: %w", redact.Error(err, token))
	}
	defer conn.Close(context.Background())

	results, err := conn.Exec(ctx, "TIMELINE_STATUS").ReadAll()
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("TIMELINE_STATUS: %w", redact.Error(err, token))
	}
	if len(results) == 0 {
		return TimelineStatus{}, errors.New("TIMELINE_STATUS: no result")
	}
	return parseStatus(results[0])
}

// parseStatus reads flush_lsn and commit_lsn, by column name, from the first row.
func parseStatus(r *pgconn.Result) (TimelineStatus, error) {
	if len(r.Rows) == 0 {
		return TimelineStatus{}, nil
	}
	flushCol, commitCol := -1, -1
	for i, fd := range r.FieldDescriptions {
		switch fd.Name {
		case "flush_lsn":
			flushCol = i
		case "commit_lsn":
			commitCol = i
		}
	}
	if flushCol < 0 || commitCol < 0 {
		return TimelineStatus{}, errors.New("TIMELINE_STATUS: missing flush_lsn or commit_lsn column")
	}
	row := r.Rows[0]
	if flushCol >= len(row) || commitCol >= len(row) || row[flushCol] == nil || row[commitCol] == nil {
		return TimelineStatus{}, errors.New("TIMELINE_STATUS: null flush_lsn or commit_lsn")
	}
	flush, err := spec.ParseLsn(string(row[flushCol]))
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("TIMELINE_STATUS flush_lsn: %w", err)
	}
	commit, err := spec.ParseLsn(string(row[commitCol]))
	if err != nil {
		return TimelineStatus{}, fmt.Errorf("TIMELINE_STATUS commit_lsn: %w", err)
	}
	return TimelineStatus{Known: true, FlushLSN: flush, CommitLSN: commit}, nil
}
