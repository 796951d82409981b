package compute

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
		Lease: func(ctx context.Context, connstr, token, tenant, timeline, lsn string) (time.Time, error) {
			t, err := pageserver.LeaseLSNIdle(ctx, cfg.PageserverIdleTimeout, connstr, token, tenant, timeline, lsn)
			if errors.Is(err, pageserver.ErrLeaseNotGranted) {
				return t, fmt.Errorf("%w: %v", lsnlease.ErrNotGranted, err)
			}
			return t, err
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
	var connstrs []string
	for _, c := range strings.Split(p.PageserverConnstr, ",") {
		if c = strings.TrimSpace(c); c != "" {
			connstrs = append(connstrs, c)
		}
	}
	return lsnlease.Target{Connstrs: connstrs, Token: p.StorageAuthToken, Tenant: p.TenantID,
		Timeline: p.TimelineID, LSN: lsn.String()}, true, nil
}
