package compute

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgbouncer/pgbouncertest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// lockedBuf collects a logger's text output from several goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// withCompanions rewrites the rig's config with pgbouncer_settings and local_proxy_config
// and points the settings at pgbouncer (connstr, ini) and at files in dir.
func (r *configureRig) withCompanions(t *testing.T, ini, connstr, lpDir string) *lockedBuf {
	t.Helper()
	path := paths.AppliedConfigFile(r.cfg.StateDir)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	var s map[string]json.RawMessage
	if err := json.Unmarshal(top["spec"], &s); err != nil {
		t.Fatal(err)
	}
	s["pgbouncer_settings"] = json.RawMessage(`{"default_pool_size": "33", "max_client_conn": "444"}`)
	s["local_proxy_config"] = json.RawMessage(`{"jwks": [{"id": "j1", "role_names": ["authenticated"], "jwks_url": "https://example.com/jwks.json", "provider_name": "p"}]}`)
	top["spec"], _ = json.Marshal(s)
	out, _ := json.Marshal(top)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	r.cfg.PgbouncerIni, r.cfg.PgbouncerConnstr = ini, connstr
	r.cfg.LocalProxyConfig, r.cfg.LocalProxyPidFile = filepath.Join(lpDir, "config.json"), filepath.Join(lpDir, "pid")
	buf := &lockedBuf{}
	r.deps.Log = slog.New(slog.NewTextHandler(buf, nil))
	return buf
}

func TestFirstConfigureCompanions(t *testing.T) {
	pb := pgbouncertest.Start(t)
	r := newConfigureRig(t, false)
	lpDir := t.TempDir()
	logs := r.withCompanions(t, pb.IniPath, pb.Connstr(), lpDir)
	if err := <-r.configureAsync(); err != nil {
		t.Fatal(err)
	}
	if got := pb.Setting(t, "default_pool_size"); got != "33" {
		t.Errorf("pgbouncer default_pool_size = %q, want 33\n%s", got, logs)
	}
	if got := pb.Setting(t, "max_client_conn"); got != "444" {
		t.Errorf("pgbouncer max_client_conn = %q, want 444", got)
	}
	b, err := os.ReadFile(filepath.Join(lpDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lp spec.LocalProxySpec
	if err := json.Unmarshal(b, &lp); err != nil || len(lp.JWKS) != 1 || lp.JWKS[0].JWKSURL != "https://example.com/jwks.json" {
		t.Errorf("local_proxy config %s (%v)", b, err)
	}
	// local_proxy does not run here: that is said, and is no error.
	if !strings.Contains(logs.String(), "local_proxy not signalled") {
		t.Errorf("no line about local_proxy not running:\n%s", logs)
	}
}

// TestFirstConfigureCompanionsFailures: an absent pgbouncer is an error line and the
// compute runs; a local_proxy config that cannot be written fails the start (as
// compute_ctl's apply_config).
func TestFirstConfigureCompanionsFailures(t *testing.T) {
	t.Run("pgbouncer absent", func(t *testing.T) {
		r := newConfigureRig(t, false)
		ini := filepath.Join(t.TempDir(), "pgbouncer.ini")
		if err := os.WriteFile(ini, []byte("[pgbouncer]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		connstr := "host=127.0.0.1 dbname=pgbouncer user=postgres sslmode=disable port=" + strconv.Itoa(pgbouncertest.FreePort(t))
		logs := r.withCompanions(t, ini, connstr, t.TempDir())
		if err := <-r.configureAsync(); err != nil {
			t.Fatal(err)
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Running {
			t.Errorf("status %s, want running", rec.Status)
		}
		if !strings.Contains(logs.String(), "could not tune pgbouncer; the compute goes on") || !strings.Contains(logs.String(), "connect to pgbouncer") {
			t.Errorf("no clear line about pgbouncer:\n%s", logs)
		}
		if b, _ := os.ReadFile(ini); string(b) != "[pgbouncer]\n" {
			t.Errorf("ini written without a pgbouncer: %s", b)
		}
	})
	t.Run("local_proxy config unwritable", func(t *testing.T) {
		r := newConfigureRig(t, false)
		pb := pgbouncertest.Start(t)
		r.withCompanions(t, pb.IniPath, pb.Connstr(), filepath.Join(t.TempDir(), "missing"))
		err := <-r.configureAsync()
		if err == nil || !strings.Contains(err.Error(), "configure local_proxy") {
			t.Fatalf("configure = %v, want a local_proxy failure", err)
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "local_proxy config") {
			t.Errorf("status %s, error %v", rec.Status, rec.Error)
		}
		// pgbouncer got its settings all the same.
		if got := pb.Setting(t, "default_pool_size"); got != "33" {
			t.Errorf("pgbouncer default_pool_size = %q, want 33", got)
		}
	})
}

// TestReconfigureCompanions: a POST /configure's config reaches pgbouncer and
// local_proxy, and a local_proxy config that cannot be written does not fail it.
func TestReconfigureCompanions(t *testing.T) {
	pb := pgbouncertest.Start(t)
	r := newConfigureRig(t, false)
	lpDir := t.TempDir()
	logs := r.withCompanions(t, pb.IniPath, pb.Connstr(), filepath.Join(lpDir, "missing"))
	raw, err := os.ReadFile(paths.AppliedConfigFile(r.cfg.StateDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.PendingConfigFile(r.cfg.StateDir), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	statetest.MustSet(t, r.store, state.ConfigurationPending, nil)
	if err := <-r.configureAsync(); err != nil {
		t.Fatalf("reconfigure: %v\n%s", err, logs)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Running {
		t.Errorf("status %s, want running", rec.Status)
	}
	if got := pb.Setting(t, "default_pool_size"); got != "33" {
		t.Errorf("pgbouncer default_pool_size = %q, want 33\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "could not configure local_proxy; the compute goes on") {
		t.Errorf("no line about local_proxy:\n%s", logs)
	}
}
