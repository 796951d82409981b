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

// pgDir is a temporary directory postgres can search (its parents too).
func pgDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	certtest.OpenToPostgres(t, dir)
	return dir
}

// toPostgres gives the files to postgres, as a certificate manager would (needs root: the
// tests run as root, and the reader is then not postgres, so every check applies).
func toPostgres(t *testing.T, paths ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to postgres")
	}
	owner, err := lookupCred(Owner)
	if err != nil {
		t.Skip(err)
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(owner.uid), int(owner.gids[0])); err != nil {
			t.Fatal(err)
		}
	}
}

func files(t *testing.T, cert, key []byte) spec.TLSConfig {
	t.Helper()
	dir := pgDir(t)
	c := spec.TLSConfig{CertPath: filepath.Join(dir, "tls.crt"), KeyPath: filepath.Join(dir, "tls.key")}
	if err := os.WriteFile(c.CertPath, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	toPostgres(t, c.CertPath, c.KeyPath)
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
	dir := pgDir(t)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	toPostgres(t, fifo, big)
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

// TestReadsOnlyWhatPostgresMay: the paths come from a config postgres writes; a reader
// that is not postgres (compute-api, root) reads only a file postgres could read itself,
// reached through no symbolic link that leaves the named file's directory. Each case
// was read (and its digest logged) before the check.
func TestReadsOnlyWhatPostgresMay(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, key := certtest.Make(t, k, 4)
	ok := files(t, cert, key) // postgres's own files: read
	if _, err := Load(ok); err != nil {
		t.Fatalf("postgres's own files: %v", err)
	}
	dir := filepath.Dir(ok.CertPath)
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, cert, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Root's files: readable by everyone, read; 0600 or 0640 root:root, refused.
	worldReadable := write("root-0644.crt", 0o644)
	if _, err := FileDigest(worldReadable); err != nil {
		t.Errorf("a world-readable certificate: %v", err)
	}
	for _, p := range []string{write("root-0600.crt", 0o600), write("root-0640.crt", 0o640)} {
		if _, err := FileDigest(p); err == nil || !strings.Contains(err.Error(), "cannot be read by postgres") {
			t.Errorf("FileDigest(%s) = %v, want a refusal", p, err)
		}
	}
	// In group postgres with g+r: read.
	owner, _ := lookupCred(Owner)
	grp := write("root-group.crt", 0o640)
	if err := os.Chown(grp, 0, int(owner.gids[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := FileDigest(grp); err != nil {
		t.Errorf("a certificate of group postgres: %v", err)
	}
	// A link to a file elsewhere (a secret of root's, or of compute-api's credentials):
	// refused, whatever the target's mode.
	for i, target := range []string{"/etc/shadow", "/etc/hostname", worldReadable} {
		link := filepath.Join(pgDir(t), "tls.crt")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := FileDigest(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("%d: FileDigest(link to %s) = %v, want a refusal", i, target, err)
		}
		if _, err := Load(spec.TLSConfig{CertPath: link, KeyPath: ok.KeyPath}); err == nil {
			t.Errorf("Load with a link to %s: no error", target)
		}
	}
	// A readable file in a directory postgres cannot search: refused.
	hidden := filepath.Join(dir, "hidden")
	if err := os.Mkdir(hidden, 0o700); err != nil {
		t.Fatal(err)
	}
	inHidden := filepath.Join(hidden, "tls.crt")
	if err := os.WriteFile(inHidden, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FileDigest(inHidden); err == nil || !strings.Contains(err.Error(), "cannot be searched by postgres") {
		t.Errorf("FileDigest in a 0700 root directory = %v, want a refusal", err)
	}
	// A secret mount's layout (Kubernetes: tls.crt -> ..data/tls.crt, ..data -> ..2026_12_06/):
	// links within the directory, read.
	mount := pgDir(t)
	ts := filepath.Join(mount, "..2026_12_06")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"tls.crt", cert}, {"tls.key", key}} {
		if err := os.WriteFile(filepath.Join(ts, f.name), f.b, 0o600); err != nil {
			t.Fatal(err)
		}
		toPostgres(t, filepath.Join(ts, f.name))
	}
	if err := os.Symlink("..2026_12_06", filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(mount, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(spec.TLSConfig{CertPath: filepath.Join(mount, "tls.crt"), KeyPath: filepath.Join(mount, "tls.key")}); err != nil {
		t.Errorf("a secret mount's links: %v", err)
	}
	// The key too: root's 0600 key is refused to a reader that is not postgres.
	rootKey := write("root.key", 0o600)
	if err := os.WriteFile(rootKey, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(spec.TLSConfig{CertPath: ok.CertPath, KeyPath: rootKey}); err == nil || !strings.Contains(err.Error(), "read key") {
		t.Errorf("Load with root's 0600 key: %v", err)
	}
}

// TestDirectorySwappedAfterTheCheck: postgres, who writes the config and owns the
// directory, replaces a directory on the resolved path with a link to a directory it
// cannot search, between the resolution and the open (afterResolve). The reader must not
// follow it: nothing is read (a check by name, then an open that follows directory links,
// would read root's file).
func TestDirectorySwappedAfterTheCheck(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, _ := certtest.Make(t, k, 4)
	secret, _ := certtest.Make(t, k, 5)
	base := pgDir(t)
	certs := filepath.Join(base, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(certs, "tls.crt")
	if err := os.WriteFile(named, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	toPostgres(t, named)
	// Root's directory, which postgres cannot search, with a file any reader of the
	// directory could read.
	hidden := filepath.Join(base, "hidden")
	if err := os.Mkdir(hidden, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hidden, "tls.crt"), secret, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FileDigest(named); err != nil {
		t.Fatalf("before the swap: %v", err)
	}
	t.Cleanup(func() { afterResolve = func(string) {} })
	afterResolve = func(string) {
		if err := os.Rename(certs, certs+".old"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(hidden, certs); err != nil {
			t.Fatal(err)
		}
	}
	d, err := FileDigest(named)
	if err == nil {
		t.Fatalf("read through a directory swapped for a link (digest %s; root's file %s)", d, digest(secret))
	}
	if !strings.Contains(err.Error(), "no symbolic link") {
		t.Errorf("error %v, want one about the link", err)
	}
}
