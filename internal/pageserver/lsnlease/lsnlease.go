// Package lsnlease keeps the LSN of a Static compute readable on the pageservers: it asks
// every pageserver of every shard for a lease (`lease lsn ...` over libpq, or LeaseLsn
// over gRPC, as the spec prefers), renews it before it expires, renews at once when the
// pageserver connection changes, and stops for good when a lease is refused (the LSN is
// behind the GC cutoff), as compute_ctl's lsn_lease thread does.
package lsnlease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
)

// Target is what to lease: derived from the current spec.
type Target struct {
	// Protocol is the one the spec prefers; URLs are of that protocol.
	Protocol spec.PageserverProtocol
	// Shards, shard 0 first.
	Shards   []Shard
	Token    string
	Tenant   string
	Timeline string
	LSN      string
}

// Shard is one shard of the tenant.
type Shard struct {
	// TenantShard is the tenant shard id (the tenant id alone when unsharded), as the
	// libpq lease command names it; ShardID is "<number><count>" in hex, gRPC's
	// neon-shard-id.
	TenantShard, ShardID string
	// URLs are the shard's pageservers: each is asked for a lease.
	URLs []string
}

func (t Target) key() string {
	var b strings.Builder
	b.WriteString(string(t.Protocol))
	for _, s := range t.Shards {
		b.WriteString("|" + s.ShardID + "=" + strings.Join(s.URLs, ","))
	}
	return b.String() + "|" + t.Tenant + "|" + t.Timeline + "|" + t.LSN
}

// LeaseFunc asks one pageserver (url) of shard s for a lease and returns its expiry.
type LeaseFunc func(ctx context.Context, t Target, s Shard, url string) (time.Time, error)

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
				log.Info("lsn lease granted", "protocol", t.Protocol, "lsn", t.LSN, "valid_until", expiry.UTC().Format(time.RFC3339), "renew_in_ms", wait.Milliseconds())
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
	for i, s := range t.Shards {
		for _, u := range s.URLs {
			e, err := l.Lease(ctx, t, s, u)
			if err != nil {
				return time.Time{}, fmt.Errorf("shard %d (%s): %w", i, s.ShardID, err)
			}
			if expiry.IsZero() || e.Before(expiry) {
				expiry = e
			}
		}
	}
	return expiry, nil
}
