package system

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

// warmupDir is the throwaway cluster beside the default PGDATA.
const warmupDir = "/var/db/postgres/compute.warmup"

// initJournal is the journal of compute-init.service's current run.
func initJournal(t *testing.T) string {
	t.Helper()
	inv := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-p", "InvocationID", "--value", "compute-init.service"))
	if inv == "" {
		t.Fatal("compute-init.service has no invocation ID")
	}
	return run(t, "/bin/journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_INVOCATION_ID="+inv)
}

// TestPooledWarmup: a compute started without a spec (a pooled VM) warms the VM up
// while it waits (a throwaway initdb and Postgres start under compute-init.service, then
// the directory removed), and POST /configure then brings it to running; a POST
// /configure that comes at once is taken at once, whatever the warm-up was doing; a
// start with a spec in the config file does not warm up.
func TestPooledWarmup(t *testing.T) {
	writeConfig(t, nil)
	restart(t)
	waitStatus(t, "empty")
	var j string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		j = initJournal(t)
		if strings.Contains(j, "warm-up done") || strings.Contains(j, "warm-up failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no end of the warm-up in compute-init's journal:\n%s", j)
		}
	}
	if !strings.Contains(j, "warming up the VM") || !strings.Contains(j, "warm-up done") {
		t.Fatalf("compute-init's journal:\n%s", j)
	}
	if _, err := os.Lstat(warmupDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there after the warm-up: %v", warmupDir, err)
	}
	if s := status(t); s.Status != "empty" {
		t.Fatalf("status after the warm-up: %s", s.Status)
	}
	body, _ := json.Marshal(map[string]any{"spec": defaultSpec(), "compute_ctl_config": map[string]any{"jwks": jwks}})
	if code, b := call(t, "POST", "/configure", computeToken(t), body); code != 200 || !strings.Contains(string(b), `"status":"running"`) {
		t.Fatalf("/configure after the warm-up: %d %s\n%s", code, b, initJournal(t))
	}
	if c, err := login(t, "alice", alicePass, "appdb"); err != nil {
		t.Fatalf("login after /configure: %v", err)
	} else {
		c.Close(context.Background())
	}

	// A /configure right after the start: taken at once; the warm-up (aborted, or done
	// if it was quicker) leaves nothing behind.
	restart(t)
	if code, b := call(t, "POST", "/configure", computeToken(t), body); code != 200 || !strings.Contains(string(b), `"status":"running"`) {
		t.Fatalf("/configure at once: %d %s\n%s", code, b, initJournal(t))
	}
	j = initJournal(t)
	if !strings.Contains(j, "warm-up aborted") && !strings.Contains(j, "warm-up done") {
		t.Errorf("compute-init's journal shows no end of the warm-up:\n%s", j)
	}
	if _, err := os.Lstat(warmupDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there: %v", warmupDir, err)
	}
	if out, _ := runMayFail("/bin/systemctl", "show", "-p", "TasksCurrent", "--value", "compute-init.service"); strings.TrimSpace(out) != "0" && strings.TrimSpace(out) != "[not set]" {
		t.Errorf("compute-init.service still has %s tasks after prepare", strings.TrimSpace(out))
	}

	// With a spec in the config file: no warm-up at all.
	writeConfig(t, defaultSpec())
	restart(t)
	waitStatus(t, "running")
	if j := initJournal(t); strings.Contains(j, "warming up the VM") {
		t.Errorf("a start with a spec warmed up:\n%s", j)
	}
}
