package pgdata_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"testing"

	"github.com/computetools/compute-tools/internal/certtest"
	"github.com/computetools/compute-tools/internal/pgdata"
)

func TestInstallTLS(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, keyPEM := certtest.Make(t, key, 7)
	for _, nosync := range []bool{false, true} {
		d := pgdata.Dir{Path: t.TempDir(), NoSync: nosync}
		if d.HasTLSCert() {
			t.Error("a certificate in an empty directory")
		}
		if err := d.InstallTLS(cert, keyPEM); err != nil {
			t.Fatal(err)
		}
		for f, want := range map[string][]byte{pgdata.ServerCertFile: cert, pgdata.ServerKeyFile: keyPEM} {
			b, err := os.ReadFile(d.File(f))
			if err != nil || string(b) != string(want) {
				t.Errorf("%s: %v", f, err)
			}
			if m := mode(t, d.File(f)); m != 0o600 {
				t.Errorf("%s mode %v, want 0600 (Postgres refuses a readable key)", f, m)
			}
		}
		if !d.HasTLSCert() {
			t.Error("HasTLSCert after InstallTLS is false")
		}
		// A renewal replaces both.
		if err := d.InstallTLS([]byte("new cert"), []byte("new key")); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(d.File(pgdata.ServerKeyFile)); string(b) != "new key" {
			t.Errorf("key not replaced: %q", b)
		}
	}
	if err := (pgdata.Dir{Path: "/nonexistent/pgdata"}).InstallTLS(cert, keyPEM); err == nil {
		t.Error("installed into a missing directory")
	}
}
