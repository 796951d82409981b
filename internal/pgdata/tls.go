package pgdata

import (
	"fmt"
	"os"
)

// InstallTLS writes the key and the certificate chain (PEM) that Postgres serves TLS
// with, each replaced atomically, mode 0600 (Postgres refuses a key others may read).
// The caller checks that they belong together (package tlsfiles).
func (d Dir) InstallTLS(cert, key []byte) error {
	if err := d.write(ServerKeyFile, key); err != nil {
		return fmt.Errorf("install tls: %w", err)
	}
	if err := d.write(ServerCertFile, cert); err != nil {
		return fmt.Errorf("install tls: %w", err)
	}
	return nil
}

// HasTLSCert reports whether a TLS certificate is installed.
func (d Dir) HasTLSCert() bool {
	_, err := os.Stat(d.File(ServerCertFile))
	return err == nil
}
