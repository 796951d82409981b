package tlsfiles

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/certtest"
	"github.com/computetools/compute-tools/internal/spec"
)

func files(t *testing.T, cert, key []byte) spec.TLSConfig {
	t.Helper()
	dir := t.TempDir()
	c := spec.TLSConfig{CertPath: filepath.Join(dir, "tls.crt"), KeyPath: filepath.Join(dir, "tls.key")}
	if err := os.WriteFile(c.CertPath, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoad(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for name, key := range map[string]crypto.Signer{"ecdsa p-256": p256, "ed25519": ed} {
		t.Run(name, func(t *testing.T) {
			cert, keyPEM := certtest.Make(t, key, 7)
			c := files(t, cert, keyPEM)
			p, err := Load(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(p.Cert) != string(cert) || string(p.Key) != string(keyPEM) {
				t.Error("Load did not return the files' contents")
			}
			d, err := FileDigest(c.CertPath)
			if err != nil || d != p.Digest() || len(d) != 64 {
				t.Errorf("digest %q vs %q, %v", d, p.Digest(), err)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert1, key1 := certtest.Make(t, k1, 1)
	_, key2 := certtest.Make(t, k2, 2)
	for _, tc := range []struct {
		name string
		c    spec.TLSConfig
		want string
	}{
		// A renewal caught half-way: the new certificate with the old key.
		{"key of another certificate", files(t, cert1, key2), "private key does not match public key"},
		{"not PEM", files(t, []byte("garbage"), key1), "failed to find any PEM data"},
		{"missing certificate", spec.TLSConfig{CertPath: "/nonexistent/tls.crt", KeyPath: "/nonexistent/tls.key"}, "read certificate"},
		{"no paths", spec.TLSConfig{}, "both required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load = %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("the error quotes key material: %v", err)
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	c := &spec.TLSConfig{CertPath: "/c", KeyPath: "/k"}
	with := func(features []string, tls *spec.TLSConfig) *spec.ComputeConfig {
		return &spec.ComputeConfig{Spec: &spec.ComputeSpec{Features: features}, ComputeCtlConfig: &spec.ComputeCtlConfig{TLS: tls}}
	}
	if Enabled(with([]string{"activity_monitor_experimental", Feature}, c)) != c {
		t.Error("feature and files: not enabled")
	}
	if Enabled(with(nil, c)) != nil || Enabled(with([]string{Feature}, nil)) != nil || Enabled(nil) != nil ||
		Enabled(&spec.ComputeConfig{Spec: &spec.ComputeSpec{Features: []string{Feature}}}) != nil {
		t.Error("enabled without both the feature and the files")
	}
}

// TestReadsAreBounded: the paths come from a config the postgres user can write, and
// compute-api reads the certificate as root; a device, a FIFO or a huge file is refused
// at once instead of being read without end (or waited on).
func TestReadsAreBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", fifo, big, dir} {
		done := make(chan error, 1)
		go func() { _, err := FileDigest(p); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("FileDigest(%s) succeeded", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("FileDigest(%s) did not return", p)
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, key := certtest.Make(t, k, 3)
	c := files(t, cert, key)
	c.KeyPath = "/dev/zero"
	if _, err := Load(c); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load with the key /dev/zero: %v", err)
	}
	c.KeyPath = big
	if _, err := Load(c); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load with a huge key: %v", err)
	}
}
