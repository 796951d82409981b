package system

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
)

// TestAPIReconcilesAtStart: a compute-api that died between recording
// configuration_pending or termination_pending_* and asking systemd (here: stopped, and
// its first step made by hand through the state store, as a SIGKILL at that moment would
// leave it) is finished by the next compute-api, through the polkit rule. The fault suite
// kills it for real; this checks the outcome deterministically.
func TestAPIReconcilesAtStart(t *testing.T) {
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	store, err := state.Open(paths.DefaultStateDir)
	if err != nil {
		t.Fatal(err)
	}

	// An interrupted /configure with a spec that adds a database.
	sp := defaultSpec()
	c := sp["cluster"].(map[string]any)
	c["databases"] = append(c["databases"].([]map[string]any), map[string]any{"name": "reconciled", "owner": "alice"})
	raw, _ := json.Marshal(map[string]any{"spec": sp, "compute_ctl_config": map[string]any{"jwks": jwks}})
	run(t, "/bin/systemctl", "stop", "compute-api.service")
	if _, _, err := store.AcceptConfig([]state.Status{state.Running}, func(*state.Record) error {
		return os.WriteFile(paths.PendingConfigFile(paths.DefaultStateDir), raw, 0o640)
	}); err != nil {
		t.Fatal(err)
	}
	run(t, "/bin/systemctl", "start", "compute-api.service")
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("after the interrupted /configure: status %s: %s", s.Status, deref(s.Error))
	}
	conn, err := login(t, "alice", alicePass, "reconciled")
	if err != nil {
		t.Fatalf("the pending spec was not applied: %v", err)
	}
	conn.Close(context.Background())
	if j := journal(t, "compute-api.service"); !strings.Contains(j, control.ReconcileLogMsg) || !strings.Contains(j, "action=reconfigure") {
		t.Errorf("compute-api's journal lacks %q with action=reconfigure", control.ReconcileLogMsg)
	}

	// An interrupted /terminate: Postgres still runs.
	run(t, "/bin/systemctl", "stop", "compute-api.service")
	if _, _, err := store.BeginTermination(false); err != nil {
		t.Fatal(err)
	}
	run(t, "/bin/systemctl", "start", "compute-api.service")
	if s := waitStatus(t, "terminated", "failed"); s.Status != "terminated" {
		t.Fatalf("after the interrupted /terminate: status %s: %s", s.Status, deref(s.Error))
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-postgres.service"); strings.TrimSpace(st) != "inactive" {
		t.Errorf("compute-postgres is %q after the reconciled /terminate", strings.TrimSpace(st))
	}
	if code, b := call(t, "POST", "/terminate", adminToken(t), nil); code != 201 {
		t.Errorf("/terminate after reconciling: %d %s", code, b)
	}
}
