package control

import (
	"context"
	"time"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// DefaultTLSPoll is how often WatchTLS looks at the certificate file (compute_ctl: 60 s;
// certificates are renewed daily, so there is no rush).
const DefaultTLSPoll = time.Minute

// WatchTLS is compute_ctl's certificate watcher: every interval, on a running compute
// whose config turns TLS on, it compares the certificate file with the one installed
// (the digest compute-init recorded). When they differ it reconfigures the compute with
// the config it runs with, as a POST /configure would: configuration_pending, then
// compute-configure copies the new certificate and key into PGDATA (once they match)
// and reloads Postgres. It returns when ctx ends.
func (c *Controller) WatchTLS(ctx context.Context, interval time.Duration) {
	if c.cfg.ReadAppliedConfig == nil {
		return
	}
	if interval <= 0 {
		interval = DefaultTLSPoll
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.checkTLS(ctx)
		}
	}
}

// checkTLS does one look of WatchTLS; it reports whether it started a reconfiguration.
// A certificate file is tried once: if its reconfiguration could not install it (a key
// that does not match yet, say), the watcher waits for the file to change again instead
// of reconfiguring at every look.
func (c *Controller) checkTLS(ctx context.Context) bool {
	rec, err := c.Load()
	if err != nil || rec.Status != state.Running {
		return false
	}
	raw, err := c.cfg.ReadAppliedConfig()
	if err != nil {
		c.log.Warn("tls watcher: read the applied config", "err", err)
		return false
	}
	cc, err := spec.ParseConfig(raw)
	if err != nil {
		c.log.Warn("tls watcher: parse the applied config", "err", err)
		return false
	}
	tc := tlsfiles.Enabled(cc)
	if tc == nil {
		return false
	}
	digest, err := tlsfiles.FileDigest(tc.CertPath)
	if err != nil {
		c.log.Warn("tls watcher: cannot read the certificate; keeping the installed one", "err", err)
		return false
	}
	if digest == rec.TLSCertDigest {
		c.tlsTried = ""
		return false
	}
	if digest == c.tlsTried {
		return false
	}
	parsed, err := spec.Parse(cc.Spec)
	if err != nil {
		c.log.Warn("tls watcher: the applied spec does not validate", "err", err)
		return false
	}
	// Under the state lock, the config must still be the one read above: a /configure
	// that came and went meanwhile is not rolled back.
	unchanged := c.unchangedConfig(raw)
	if _, _, err := c.submitConfig(raw, parsed, unchanged, state.Running); err != nil {
		c.log.Info("tls watcher: certificate changed, but the compute is busy; trying again later", "err", err)
		return false
	}
	c.tlsTried = digest
	logx.Milestone(c.log, logx.MsgConfigAccepted, "TLS certificate changed: reconfiguring", "cert", tc.CertPath, "sha256", digest)
	if msg := c.reconfigureUnless(context.WithoutCancel(ctx), ctx.Done()); msg != "" && ctx.Err() == nil {
		c.log.Error("tls watcher: reconfiguration did not start", "err", msg)
	}
	return true
}
