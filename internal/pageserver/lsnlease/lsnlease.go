// Package lsnlease keeps the LSN of a Static compute readable on the pageservers: it asks
// every shard for a lease (`lease lsn ...`), renews it before it expires, renews at once
// when the pageserver connection changes, and stops for good when a lease is refused
// (the LSN is behind the GC cutoff), as compute_ctl's lsn_lease thread does.
package lsnlease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/retry"
)

// Target is what to lease: derived from the current spec.
type Target struct {
	// Connstrs is the pageserver connstring list, one per shard, shard 0 first.
	Connstrs []string
	Token    string
	Tenant   string
	Timeline string
	LSN      string
}

func (t Target) key() string {
	return strings.Join(t.Connstrs, ",") + "|" + t.Tenant + "|" + t.Timeline + "|" + t.LSN
}

// ShardTenant is the tenant shard id of shard i of n: the tenant itself when unsharded,
// else `<tenant>-<ii><nn>` in hex.
func ShardTenant(tenant string, i, n int) string {
	if n <= 1 {
		return tenant
	}
	return fmt.Sprintf("%s-%02x%02x", tenant, i, n)
}

// LeaseFunc asks one pageserver for a lease and returns its expiry.
type LeaseFunc func(ctx context.Context, connstr, token, tenantShard, timeline, lsn string) (time.Time, error)

// ErrNotGranted must be returned (wrapped) by a LeaseFunc when the lease is refused.
var ErrNotGranted = errors.New("lease not granted")

// Loop is the lease loop.
type Loop struct {
	// Target returns the current target; ok is false when there is nothing to lease
	// (not a Static compute, or no spec).
	Target func() (t Target, ok bool, err error)
	Lease  LeaseFunc
	// Wake fires when the spec may have changed (D-Bus status signal); may be nil.
	Wake <-chan struct{}
	Now  func() time.Time
	Log  *slog.Logger
	// OnLease is told each new expiry (for tests and logs); may be nil.
	OnLease func(expiry time.Time)
}

// RenewAfter is how long to wait before renewing a lease valid for valid: max(valid-60s,
// valid/2), as compute_ctl.
func RenewAfter(valid time.Duration) time.Duration {
	return max(valid-time.Minute, valid/2)
}

// Run leases until ctx ends or a lease is refused (returns an error wrapping
// ErrNotGranted). Errors are retried with a backoff of 0.5 s x1.5 up to 60 s.
func (l *Loop) Run(ctx context.Context) error {
	now := l.Now
	if now == nil {
		now = time.Now
	}
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	backoff := retry.NewBackoff(retry.Policy{Delay: 500 * time.Millisecond, Factor: 1.5, MaxDelay: time.Minute})
	var lastKey string
	for {
		t, ok, err := l.Target()
		var wait time.Duration
		switch {
		case err != nil:
			log.Warn("lsn lease: read the spec", "err", err)
			wait = backoff.Next()
		case !ok:
			log.Info("lsn lease: nothing to lease (not a Static compute)")
			return nil
		default:
			lastKey = t.key()
			expiry, err := l.leaseAll(ctx, t)
			switch {
			case errors.Is(err, ErrNotGranted):
				log.Error("lsn lease refused: the LSN is behind the GC cutoff; no more renewals", "lsn", t.LSN)
				return err
			case err != nil:
				if ctx.Err() != nil {
					return nil
				}
				wait = backoff.Next()
				log.Warn("lsn lease failed; retrying", "err", err, "retry_in_ms", wait.Milliseconds())
			default:
				backoff.Reset()
				wait = RenewAfter(expiry.Sub(now()))
				log.Info("lsn lease granted", "lsn", t.LSN, "valid_until", expiry.UTC().Format(time.RFC3339), "renew_in_ms", wait.Milliseconds())
				if l.OnLease != nil {
					l.OnLease(expiry)
				}
			}
		}
		if err := l.sleep(ctx, wait, lastKey); err != nil {
			return nil
		}
	}
}

// sleep waits for d, or less when the target changes (a new pageserver connection).
func (l *Loop) sleep(ctx context.Context, d time.Duration, key string) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		case <-l.Wake:
			if t, ok, err := l.Target(); err == nil && ok && t.key() != key {
				return nil
			}
		}
	}
}

func (l *Loop) leaseAll(ctx context.Context, t Target) (time.Time, error) {
	var expiry time.Time
	for i, cs := range t.Connstrs {
		e, err := l.Lease(ctx, strings.TrimSpace(cs), t.Token, ShardTenant(t.Tenant, i, len(t.Connstrs)), t.Timeline, t.LSN)
		if err != nil {
			return time.Time{}, fmt.Errorf("shard %d: %w", i, err)
		}
		if expiry.IsZero() || e.Before(expiry) {
			expiry = e
		}
	}
	return expiry, nil
}
