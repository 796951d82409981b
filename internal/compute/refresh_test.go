package compute

import (
	"os"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// The configure step's part of POST /refresh_configuration: the fresh spec compute-api
// stored as pending is applied to the running Postgres (running, and it is the applied
// config now); one that cannot be applied leaves the compute pending a refresh, with the
// reason, and the applied config as it was.
func TestConfigureAppliesRefreshedSpec(t *testing.T) {
	r := newConfigureRig(t, false)
	if err := <-r.configureAsync(); err != nil {
		t.Fatal(err)
	}
	fresh := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {
	  "roles": [{"name": "alice", "encrypted_password": null, "options": null}],
	  "databases": [{"name": "appdb", "owner": "alice", "options": null}, {"name": "refreshed", "owner": "alice", "options": null}]}}}`
	if err := os.WriteFile(paths.PendingConfigFile(r.cfg.StateDir), []byte(fresh), 0o600); err != nil {
		t.Fatal(err)
	}
	statetest.MustSet(t, r.store, state.RefreshConfiguration, nil)
	if err := <-r.configureAsync(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if rec, _ := r.store.Load(); rec.Status != state.Running || rec.Error != nil {
		t.Fatalf("after the refresh: %s %v", rec.Status, rec.Error)
	}
	if !r.hasDatabase(t, "refreshed") {
		t.Error("the refreshed spec's database was not created")
	}
	if b, _ := os.ReadFile(paths.AppliedConfigFile(r.cfg.StateDir)); string(b) != fresh {
		t.Errorf("applied config %q", b)
	}

	// A fresh config that is not valid: pending again, the applied one kept.
	if err := os.WriteFile(paths.PendingConfigFile(r.cfg.StateDir), []byte(`{"spec": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	statetest.MustSet(t, r.store, state.RefreshConfiguration, nil)
	if err := <-r.configureAsync(); err != nil {
		t.Fatalf("a failed refresh is no failed unit: %v", err)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.RefreshConfigurationPending || rec.Error == nil || !strings.Contains(*rec.Error, "refresh configuration: reconfigure") {
		t.Fatalf("after a bad refresh: %s %v", rec.Status, rec.Error)
	}
	if b, _ := os.ReadFile(paths.AppliedConfigFile(r.cfg.StateDir)); string(b) != fresh {
		t.Errorf("the applied config changed: %q", b)
	}
}
