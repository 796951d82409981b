package pageserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/spec"
)

// ErrLeaseNotGranted means the pageserver answered the lease request with a NULL
// valid_until: the LSN is behind the GC cutoff and will not be kept.
var ErrLeaseNotGranted = errors.New("lsn lease not granted (LSN is behind the GC cutoff)")

// LeaseLSN asks the pageserver (the first element of connstr) to keep lsn of the timeline
// readable, with the simple query `lease lsn <tenant> <timeline> <lsn> ` (trailing space
// as compute_ctl sends it) and the token as password. For a sharded tenant, tenant is the
// tenant shard id and connstr that shard's connstring.
//
// The answer is one row whose valid_until column (or only column) holds milliseconds
// since the Unix epoch as text, as Neon's pageserver sends it; an RFC 3339 timestamp is
// accepted as well. NULL means not granted: ErrLeaseNotGranted.
//
// The pageserver may be silent for DefaultIdleTimeout at any point before the call
// fails; LeaseLSNIdle takes another bound.
func LeaseLSN(ctx context.Context, connstr, token, tenant, timeline, lsn string) (time.Time, error) {
	return LeaseLSNIdle(ctx, DefaultIdleTimeout, connstr, token, tenant, timeline, lsn)
}

// LeaseLSNIdle is LeaseLSN failing once the pageserver has sent nothing for idle
// (DefaultIdleTimeout when <= 0).
func LeaseLSNIdle(ctx context.Context, idle time.Duration, connstr, token, tenant, timeline, lsn string) (time.Time, error) {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if err := checkHexID("tenant", strings.ReplaceAll(tenant, "-", "")); err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	if err := checkHexID("timeline", timeline); err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	l, err := spec.ParseLsn(lsn)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	base, err := connConfig(connstr, token, "")
	if err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	cfg, dialer := withIdle(base, idle)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if serr := dialer.stallErr(); serr != nil {
			err = serr
		}
		return time.Time{}, fmt.Errorf("lease lsn: connect to pageserver: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	query := fmt.Sprintf("lease lsn %s %s %s ", tenant, timeline, l)
	results, err := conn.Exec(ctx, query).ReadAll()
	if serr := dialer.stallErr(); serr != nil && err != nil {
		err = serr
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	for _, res := range results {
		if res.Err != nil {
			return time.Time{}, fmt.Errorf("lease lsn: %w", res.Err)
		}
		if len(res.Rows) == 0 {
			continue
		}
		col := -1
		for i, fd := range res.FieldDescriptions {
			if fd.Name == "valid_until" {
				col = i
			}
		}
		if col < 0 && len(res.FieldDescriptions) == 1 {
			col = 0
		}
		if col < 0 || col >= len(res.Rows[0]) {
			return time.Time{}, errors.New("lease lsn: answer has no valid_until column")
		}
		v := res.Rows[0][col]
		if v == nil {
			return time.Time{}, ErrLeaseNotGranted
		}
		return parseValidUntil(string(v))
	}
	return time.Time{}, errors.New("lease lsn: no row in the answer")
}

func parseValidUntil(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("lease lsn: cannot parse valid_until %q", s)
}
