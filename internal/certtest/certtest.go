// Package certtest makes throwaway TLS certificates for tests: a self-signed ECDSA P-256
// certificate for localhost with a chosen serial number (so that a test can tell which
// one a server presents), PEM-encoded, with its key. It is imported only by tests.
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Make returns a certificate for key, signed by itself, and the key, both PEM-encoded.
// A nil key means a new ECDSA P-256 key.
func Make(t testing.TB, key crypto.Signer, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "compute"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// Write writes a new certificate with serial and its key as dir/tls.crt (0644) and
// dir/tls.key (0640), each replaced atomically as a certificate manager does, and returns
// their paths. When the test runs as root, the files belong to postgres and dir and its
// parents below the temporary directory are made searchable by everyone, as on a compute:
// internal/tlsfiles lets a reader other than postgres (root here) read only what postgres
// could.
func Write(t testing.TB, dir string, serial int64) (certPath, keyPath string) {
	t.Helper()
	cert, key := Make(t, nil, serial)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for _, f := range []struct {
		path string
		body []byte
		mode os.FileMode
	}{{keyPath, key, 0o640}, {certPath, cert, 0o644}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.body, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tmp, f.mode); err != nil {
			t.Fatal(err)
		}
		giveToPostgres(t, tmp)
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	OpenToPostgres(t, dir)
	return certPath, keyPath
}

// giveToPostgres makes postgres own path, when the test runs as root.
func giveToPostgres(t testing.TB, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// OpenToPostgres makes dir and its parents below the temporary directory searchable and
// readable by everyone (a test's t.TempDir() is 0700), so that postgres could reach the
// files in it.
func OpenToPostgres(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir()) + string(filepath.Separator)
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o055); err != nil {
			t.Fatal(err)
		}
	}
}
