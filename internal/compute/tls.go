package compute

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

// waitForCertificate: at a start, wait for a usable certificate as long as it takes (as
// compute_ctl: a certificate manager may provide it later), with the reason in the
// status line and the journal.
const waitForCertificate = time.Duration(0)

var (
	// reconfigureCertificateWait bounds the wait on a reconfiguration, which a caller is
	// waiting for: a renewal caught half-way settles within seconds.
	reconfigureCertificateWait = 10 * time.Second
	// certRetry is how often an unusable certificate is tried again.
	certRetry = time.Second
)

// installTLS copies the certificate and key named in compute_ctl_config.tls into PGDATA
// once they are readable and belong together, and records the certificate's digest (the
// renewal watcher of compute-api compares it with the file). With wait 0 it waits until
// the files are usable; otherwise at most wait.
func installTLS(ctx context.Context, cfg Settings, c spec.TLSConfig, p *spec.Parsed, d *Deps, wait time.Duration) error {
	start := time.Now()
	lastLog := time.Time{}
	err := retry.Do(ctx, retry.Policy{Delay: certRetry}, func(ctx context.Context, _ int) error {
		pair, err := tlsfiles.Load(c)
		if err == nil {
			if err := pgdataDir(cfg, p).InstallTLS(pair.Cert, pair.Key); err != nil {
				return retry.Permanent(err)
			}
			digest := pair.Digest()
			if _, err := d.Store.Update(func(r *state.Record) error { r.TLSCertDigest = digest; return nil }); err != nil {
				return retry.Permanent(err)
			}
			d.logger().Info("TLS certificate installed", "cert", c.CertPath, "sha256", digest)
			return nil
		}
		if wait > 0 && time.Since(start) >= wait {
			return retry.Permanent(fmt.Errorf("no usable TLS certificate after %s: %w", wait, err))
		}
		if time.Since(lastLog) >= time.Minute {
			d.logger().Warn("waiting for a usable TLS certificate", "err", err)
			d.status("init: waiting for the TLS certificate: " + err.Error())
			lastLog = time.Now()
		}
		return err
	})
	var re *retry.Error
	if errors.As(err, &re) {
		return fmt.Errorf("waiting for the TLS certificate: %w (last: %v)", re.Ctx, re.Last)
	}
	return err
}

// reinstallTLS copies the TLS files again on a reconfiguration (a renewed certificate
// gets in this way) and reports whether Postgres can serve TLS. Unusable new files do
// not fail a running compute: the installed ones stay, or without any Postgres serves
// without TLS; compute-api's watcher tries again when the certificate file changes.
func reinstallTLS(ctx context.Context, cfg Settings, c spec.TLSConfig, p *spec.Parsed, d *Deps) bool {
	err := installTLS(ctx, cfg, c, p, d, reconfigureCertificateWait)
	if err == nil {
		return true
	}
	if pgdataDir(cfg, p).HasTLSCert() {
		d.logger().Warn("TLS: keeping the installed certificate", "err", err)
		return true
	}
	d.logger().Warn("TLS: no usable certificate; Postgres serves without TLS until there is one", "err", err)
	return false
}
