// Package tlsfiles reads the certificate and key that Postgres serves TLS with
// (compute_ctl_config.tls with the spec feature tls_experimental, as compute_ctl): it
// checks that the key matches the first certificate of the chain and tells a renewed
// certificate by the SHA-256 digest of its file. Package pgdata copies them into PGDATA.
//
// The files are named by the config, which the postgres user can write, and compute-api
// reads the certificate (as its own user, or as root on an image without polkit): every read is bounded (a regular file of at most
// MaxFileSize, opened without blocking, so that a FIFO or a device cannot stall or
// exhaust the reader).
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
	"io"
	"os"
	"slices"
	"syscall"

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
	cert, err := readBounded(c.CertPath)
	if err != nil {
		return Pair{}, fmt.Errorf("tls: read certificate: %w", err)
	}
	key, err := readBounded(c.KeyPath)
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
	b, err := readBounded(path)
	if err != nil {
		return "", fmt.Errorf("tls: read certificate: %w", err)
	}
	return digest(b), nil
}

// MaxFileSize bounds a certificate chain or key file (a chain is a few KiB).
const MaxFileSize = 1 << 20

// readBounded reads path (symbolic links followed, as secret mounts use them) if it is a
// regular file of at most MaxFileSize bytes. O_NONBLOCK keeps the open of a FIFO from
// waiting for a writer; it changes nothing for a regular file.
func readBounded(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	return b, nil
}
