package compute

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/certtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/tlsfiles"
)

func tlsRig(t *testing.T) (Settings, *Deps, *state.Store, spec.TLSConfig, string) {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	c := spec.TLSConfig{CertPath: filepath.Join(src, "tls.crt"), KeyPath: filepath.Join(src, "tls.key")}
	return Settings{StateDir: st.Dir(), PGData: t.TempDir()}, &Deps{Store: st}, st, c, src
}

// At a start, compute-init waits for a usable certificate, then installs it with its key
// and records its digest.
func TestInstallTLSWaitsForTheCertificate(t *testing.T) {
	cfg, d, st, c, src := tlsRig(t)
	certRetry = 20 * time.Millisecond
	t.Cleanup(func() { certRetry = time.Second })
	done := make(chan error, 1)
	go func() { done <- installTLS(context.Background(), cfg, c, &spec.Parsed{}, d, waitForCertificate) }()
	select {
	case err := <-done:
		t.Fatalf("installTLS returned without a certificate: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	certtest.Write(t, src, 42)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("installTLS did not notice the certificate")
	}
	want, _ := tlsfiles.FileDigest(c.CertPath)
	if rec, _ := st.Load(); rec.TLSCertDigest != want {
		t.Errorf("recorded digest %q, want %q", rec.TLSCertDigest, want)
	}
	for _, f := range []string{"server.crt", "server.key"} {
		fi, err := os.Stat(filepath.Join(cfg.PGData, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}

	// /terminate while waiting: the wait ends with the context.
	os.Remove(c.CertPath)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- installTLS(ctx, cfg, c, &spec.Parsed{}, d, waitForCertificate) }()
	cancel()
	if err := <-done; err == nil {
		t.Error("installTLS succeeded without a certificate")
	}
}

// On a reconfiguration, unusable new files never fail the compute: the installed ones
// stay; without any, Postgres goes without TLS.
func TestReinstallTLSKeepsTheInstalledFiles(t *testing.T) {
	cfg, d, st, c, src := tlsRig(t)
	reconfigureCertificateWait, certRetry = 100*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { reconfigureCertificateWait, certRetry = 10*time.Second, time.Second })
	ctx := context.Background()

	if reinstallTLS(ctx, cfg, c, &spec.Parsed{}, d) {
		t.Error("TLS on with no certificate anywhere")
	}
	certtest.Write(t, src, 1)
	if !reinstallTLS(ctx, cfg, c, &spec.Parsed{}, d) {
		t.Fatal("TLS off with a usable certificate")
	}
	installed, _ := os.ReadFile(filepath.Join(cfg.PGData, "server.crt"))
	rec, _ := st.Load()

	// A renewal caught half-way: a new certificate beside the old key.
	newCert := t.TempDir()
	certtest.Write(t, newCert, 2)
	b, _ := os.ReadFile(filepath.Join(newCert, "tls.crt"))
	if err := os.WriteFile(c.CertPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if !reinstallTLS(ctx, cfg, c, &spec.Parsed{}, d) {
		t.Error("TLS off although a usable certificate is installed")
	}
	if now, _ := os.ReadFile(filepath.Join(cfg.PGData, "server.crt")); string(now) != string(installed) {
		t.Error("a certificate that does not match its key replaced the installed one")
	}
	if after, _ := st.Load(); after.TLSCertDigest != rec.TLSCertDigest {
		t.Error("the recorded digest changed although nothing was installed (the watcher must try again)")
	}
}
