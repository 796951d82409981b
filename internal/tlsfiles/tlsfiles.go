// Package tlsfiles reads the certificate and key that Postgres serves TLS with
// (compute_ctl_config.tls with the spec feature tls_experimental, as compute_ctl): it
// checks that the key matches the first certificate of the chain and tells a renewed
// certificate by the SHA-256 digest of its file. Package pgdata copies them into PGDATA.
//
// The check is crypto/tls's: any key type Go and Postgres both handle (ECDSA, Ed25519,
// RSA) is accepted, where compute_ctl knows only ECDSA P-256 and Ed25519.
package tlsfiles

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/computetools/compute-tools/internal/spec"
)

// Feature is the spec feature that turns TLS on.
const Feature = "tls_experimental"

// Enabled returns the TLS files of a config when Postgres is to serve TLS: the spec has
// the feature and compute_ctl_config names the files; nil otherwise.
func Enabled(cc *spec.ComputeConfig) *spec.TLSConfig {
	if cc == nil || cc.Spec == nil || cc.ComputeCtlConfig == nil || cc.ComputeCtlConfig.TLS == nil {
		return nil
	}
	if !slices.Contains(cc.Spec.Features, Feature) {
		return nil
	}
	return cc.ComputeCtlConfig.TLS
}

// Pair is a certificate chain and its key, PEM-encoded, checked to belong together.
type Pair struct {
	Cert, Key []byte
}

// Load reads the files of c and checks that the key matches the first certificate
// (checking together, which also catches a renewal caught half-way: new certificate,
// old key).
func Load(c spec.TLSConfig) (Pair, error) {
	if c.CertPath == "" || c.KeyPath == "" {
		return Pair{}, errors.New("tls: cert_path and key_path are both required")
	}
	cert, err := os.ReadFile(c.CertPath)
	if err != nil {
		return Pair{}, fmt.Errorf("tls: read certificate: %w", err)
	}
	key, err := os.ReadFile(c.KeyPath)
	if err != nil {
		return Pair{}, fmt.Errorf("tls: read key: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		// crypto/tls's messages name the problem and never include key material.
		return Pair{}, fmt.Errorf("tls: %s and %s: %w", c.CertPath, c.KeyPath, err)
	}
	return Pair{Cert: cert, Key: key}, nil
}

// Digest is the hex SHA-256 of the certificate file's bytes.
func (p Pair) Digest() string { return digest(p.Cert) }

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// FileDigest is the hex SHA-256 of a certificate file (compare with Pair.Digest).
func FileDigest(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("tls: read certificate: %w", err)
	}
	return digest(b), nil
}
