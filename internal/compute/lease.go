package compute

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageserver/lsnlease"
	"github.com/computetools/compute-tools/internal/spec"
)

// LeaseLSN is `compute-init lsn-lease` (compute-lsn-lease.service): for a Static compute
// in neon mode it keeps the compute's LSN leased on every pageserver shard while the
// compute runs; for any other compute it exits at once.
func LeaseLSN(ctx context.Context, cfg Settings, d *Deps) error {
	var wake <-chan struct{}
	if d.Waker != nil {
		ch, cancel := d.Waker.Subscribe()
		defer cancel()
		wake = ch
	}
	loop := &lsnlease.Loop{
		Target: func() (lsnlease.Target, bool, error) { return leaseTarget(cfg) },
		Lease: func(ctx context.Context, t lsnlease.Target, s lsnlease.Shard, url string) (time.Time, error) {
			var exp time.Time
			var err error
			if t.Protocol == spec.ProtocolGRPC {
				exp, err = pageserver.LeaseLSNGRPC(ctx, cfg.PageserverIdleTimeout, pageserver.GRPCTarget{URL: url,
					TenantID: t.Tenant, TimelineID: t.Timeline, ShardID: s.ShardID, Token: t.Token}, t.LSN)
			} else {
				exp, err = pageserver.LeaseLSNIdle(ctx, cfg.PageserverIdleTimeout, url, t.Token, s.TenantShard, t.Timeline, t.LSN)
			}
			if errors.Is(err, pageserver.ErrLeaseNotGranted) {
				return exp, fmt.Errorf("%w: %v", lsnlease.ErrNotGranted, err)
			}
			return exp, err
		},
		Wake: wake,
		Log:  d.Log,
	}
	return loop.Run(ctx)
}

func leaseTarget(cfg Settings) (lsnlease.Target, bool, error) {
	l, err := readAppliedConfig(cfg)
	if err != nil {
		return lsnlease.Target{}, false, err
	}
	s, p := l.ComputeSpec(), l.Spec
	lsn, static := s.Mode.StaticLSN()
	if !static || p.Storage != spec.StorageNeon {
		return lsnlease.Target{}, false, nil
	}
	return leaseTargetOf(p, lsn.String()), true, nil
}

// leaseTargetOf is what a Static compute of p leases at lsn: every pageserver of every
// shard, over the protocol the spec prefers.
func leaseTargetOf(p *spec.Parsed, lsn string) lsnlease.Target {
	ps := p.Pageserver
	t := lsnlease.Target{Protocol: ps.Prefer, Token: p.StorageAuthToken, Tenant: p.TenantID,
		Timeline: p.TimelineID, LSN: lsn}
	for i, sh := range ps.Shards {
		s := lsnlease.Shard{TenantShard: ps.TenantShard(p.TenantID, i), ShardID: ps.ShardID(i)}
		for _, u := range sh.Pageservers {
			s.URLs = append(s.URLs, u.URL(ps.Prefer))
		}
		t.Shards = append(t.Shards, s)
	}
	return t
}
