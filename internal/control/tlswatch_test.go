package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/certtest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// The certificate watcher reconfigures a running compute when the certificate file no
// longer matches the installed one, and leaves it alone otherwise.
func TestWatchTLS(t *testing.T) {
	dir := t.TempDir()
	// compute-api reads only what postgres could read (internal/tlsfiles).
	certtest.OpenToPostgres(t, dir)
	cert := filepath.Join(dir, "tls.crt")
	write := func(body string) string {
		if err := os.WriteFile(cert, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(body))
		return hex.EncodeToString(sum[:])
	}
	installed := write("certificate one")
	features := `["tls_experimental"]`
	config := func() ([]byte, error) {
		return []byte(fmt.Sprintf(`{"spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "features": %s, "cluster": {"roles": [], "databases": []}},
		  "compute_ctl_config": {"jwks": {"keys": []}, "tls": {"cert_path": %q, "key_path": %q}}}`,
			features, cert, filepath.Join(dir, "tls.key"))), nil
	}
	h := newRig(t, func(c *Deps) { c.ReadAppliedConfig = config })
	if _, err := statetest.Set(h.store, state.Init, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := statetest.Set(h.store, state.Running, func(r *state.Record) { r.TLSCertDigest = installed }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if h.ctl.checkTLS(ctx) {
		t.Fatal("reconfigured although the certificate did not change")
	}

	// Renewed: a reconfiguration with the config the compute runs with.
	write("certificate two")
	if !h.ctl.checkTLS(ctx) {
		t.Fatal("a renewed certificate did not start a reconfiguration")
	}
	rec, _ := h.store.Load()
	if rec.Status != state.ConfigurationPending || h.units.reconfigures != 1 {
		t.Fatalf("status %s, %d reconfigurations", rec.Status, h.units.reconfigures)
	}
	if got := string(h.pending.calls[len(h.pending.calls)-1]); !strings.Contains(got, `"tls_experimental"`) {
		t.Errorf("pending config %q is not the applied one", got)
	}
	// While that runs, nothing more is started.
	if h.ctl.checkTLS(ctx) {
		t.Error("a second reconfiguration while the first is pending")
	}

	// The reconfiguration could not install it (the digest did not move): the same file
	// is not tried again, a newer one is.
	for _, st := range []state.Status{state.Configuration, state.Running} {
		if _, err := statetest.Set(h.store, st, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.ctl.checkTLS(ctx) {
		t.Error("the same unusable certificate was tried again")
	}
	write("certificate three")
	if !h.ctl.checkTLS(ctx) {
		t.Fatal("a newer certificate was not tried")
	}
	for _, st := range []state.Status{state.Configuration, state.Running} {
		if _, err := statetest.Set(h.store, st, nil); err != nil {
			t.Fatal(err)
		}
	}

	// A /configure that changes the applied config between the look and the submit is
	// not rolled back.
	write("certificate four")
	calls := 0
	h.ctl.cfg.ReadAppliedConfig = func() ([]byte, error) {
		calls++
		b, err := config()
		if calls > 1 {
			b = append(b, ' ')
		}
		return b, err
	}
	if h.ctl.checkTLS(ctx) {
		t.Error("reconfigured with a config that was replaced meanwhile")
	}
	if rec, _ := h.store.Load(); rec.Status != state.Running {
		t.Errorf("status %s", rec.Status)
	}
	h.ctl.cfg.ReadAppliedConfig = config

	// Without the feature, nothing is watched.
	features = `[]`
	if h.ctl.checkTLS(ctx) {
		t.Error("reconfigured without the tls_experimental feature")
	}
}

// WatchTLS returns when its context ends and does nothing without a config reader.
func TestWatchTLSStops(t *testing.T) {
	h := newRig(t, func(c *Deps) { c.ReadAppliedConfig = func() ([]byte, error) { return nil, os.ErrNotExist } })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.ctl.WatchTLS(ctx, time.Millisecond); close(done) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchTLS did not return")
	}
	newRig(t).ctl.WatchTLS(context.Background(), time.Millisecond) // returns at once
}
