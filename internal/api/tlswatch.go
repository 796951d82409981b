package api

import (
	"bytes"
	"context"
	"errors"
	"time"

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
func (s *Server) WatchTLS(ctx context.Context, interval time.Duration) {
	if s.cfg.ReadAppliedConfig == nil {
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
			s.checkTLS(ctx)
		}
	}
}

// checkTLS does one look of WatchTLS; it reports whether it started a reconfiguration.
// A certificate file is tried once: if its reconfiguration could not install it (a key
// that does not match yet, say), the watcher waits for the file to change again instead
// of reconfiguring at every look.
func (s *Server) checkTLS(ctx context.Context) bool {
	rec, err := s.load()
	if err != nil || rec.Status != state.Running {
		return false
	}
	raw, err := s.cfg.ReadAppliedConfig()
	if err != nil {
		s.log.Warn("tls watcher: read the applied config", "err", err)
		return false
	}
	cc, err := s.cfg.ParseConfig(raw)
	if err != nil {
		s.log.Warn("tls watcher: parse the applied config", "err", err)
		return false
	}
	c := tlsfiles.Enabled(cc)
	if c == nil {
		return false
	}
	digest, err := tlsfiles.FileDigest(c.CertPath)
	if err != nil {
		s.log.Warn("tls watcher: cannot read the certificate; keeping the installed one", "err", err)
		return false
	}
	if digest == rec.TLSCertDigest {
		s.tlsTried = ""
		return false
	}
	if digest == s.tlsTried {
		return false
	}
	parsed, err := s.cfg.ParseSpec(cc.Spec)
	if err != nil {
		s.log.Warn("tls watcher: the applied spec does not validate", "err", err)
		return false
	}
	// Under the state lock, the config must still be the one read above: a /configure
	// that came and went meanwhile is not rolled back.
	unchanged := func() error {
		now, err := s.cfg.ReadAppliedConfig()
		if err != nil {
			return err
		}
		if !bytes.Equal(now, raw) {
			return errConfigMoved
		}
		return nil
	}
	if _, _, err := s.submitConfig(raw, parsed, unchanged, state.Running); err != nil {
		s.log.Info("tls watcher: certificate changed, but the compute is busy; trying again later", "err", err)
		return false
	}
	s.tlsTried = digest
	s.log.Info("TLS certificate changed: reconfiguring", "cert", c.CertPath, "sha256", digest)
	if msg := s.reconfigure(context.WithoutCancel(ctx)); msg != "" {
		s.log.Error("tls watcher: reconfiguration did not start", "err", msg)
	}
	return true
}

var errConfigMoved = errors.New("the applied config changed meanwhile")
