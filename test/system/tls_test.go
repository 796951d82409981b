package system

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/certtest"
)

const tlsDir = "/etc/compute/tls"

// servedSerial connects as alice over TCP with TLS required and returns the serial
// number of the certificate Postgres presents.
func servedSerial(t *testing.T) (int64, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(pgAddr + " sslmode=require user=alice dbname=appdb")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = alicePass
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	tc, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		return 0, fmt.Errorf("the connection is not TLS (%T)", c.PgConn().Conn())
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// writeTLSFiles writes a certificate with serial and its key where the config points,
// readable by the postgres group (compute-init runs as postgres).
func writeTLSFiles(t *testing.T, serial int64) {
	t.Helper()
	_, key := certtest.Write(t, tlsDir, serial)
	run(t, "/bin/chgrp", "postgres", key)
}

// TLS (feature tls_experimental with compute_ctl_config.tls): Postgres serves the
// configured certificate, and a renewed one replaces it on a running compute.
func TestTLS(t *testing.T) {
	orig, err := os.ReadFile(defaultsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(defaultsFile, orig, 0o644); err != nil {
			t.Errorf("restore %s: %v", defaultsFile, err)
		}
		os.RemoveAll(tlsDir)
		runMayFail("/bin/systemctl", "restart", "compute-api.service")
	})
	// Look for renewals every second instead of every minute.
	if err := os.WriteFile(defaultsFile, append(append([]byte{}, orig...), "\nCOMPUTE_TLS_POLL_INTERVAL=1s\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	writeTLSFiles(t, 1001)
	sp := defaultSpec()
	sp["features"] = []string{"tls_experimental"}
	cfg := map[string]any{"spec": sp, "compute_ctl_config": map[string]any{
		"jwks": jwks,
		"tls":  map[string]string{"cert_path": filepath.Join(tlsDir, "tls.crt"), "key_path": filepath.Join(tlsDir, "tls.key")},
	}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	writeRaw(t, b)
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s\n%s", s.Status, deref(s.Error), journal(t, "compute-init.service"))
	}
	serial, err := servedSerial(t)
	if err != nil || serial != 1001 {
		t.Fatalf("served certificate %d, %v; want serial 1001", serial, err)
	}

	// Renewal: compute-api notices the new file, the compute is reconfigured and
	// Postgres serves the new certificate.
	writeTLSFiles(t, 1002)
	deadline := time.Now().Add(60 * time.Second)
	for serial != 1002 {
		if time.Now().After(deadline) {
			t.Fatalf("still serving %d a minute after the renewal (%v)\n%s", serial, err, journal(t, "compute-api.service"))
		}
		time.Sleep(200 * time.Millisecond)
		serial, err = servedSerial(t)
	}
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Errorf("after the renewal: %s %s", s.Status, deref(s.Error))
	}
}
