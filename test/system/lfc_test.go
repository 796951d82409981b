package system

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/lfc/lfctest"
)

const (
	lfcTenant   = "0123456789abcdef0123456789abcdef"
	lfcTimeline = "fedcba9876543210fedcba9876543210"
	lfcEndpoint = "ep-system-test"
	lfcToken    = "endpoint-storage-token-not-for-logs"
)

type lfcPrewarm struct {
	Status    string  `json:"status"`
	Error     *string `json:"error"`
	Total     *int    `json:"total"`
	Prewarmed *int    `json:"prewarmed"`
	Skipped   *int    `json:"skipped"`
}

// waitLFC polls GET path (as the control plane would) until cond holds.
func waitLFC(t *testing.T, path string, within time.Duration, cond func(lfcPrewarm) bool) lfcPrewarm {
	t.Helper()
	deadline := time.Now().Add(within)
	var last lfcPrewarm
	var body []byte
	for time.Now().Before(deadline) {
		var code int
		code, body = call(t, "GET", path, computeToken(t), nil)
		if code == 200 && json.Unmarshal(body, &last) == nil && cond(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: %s\njournal:\n%s", path, body, journal(t, monitorUnit))
	return last
}

// TestLFC: prewarm and offload through compute-api, carried out by compute-monitor (over
// the system bus, with the installed D-Bus policy) against a stand-in neon extension in
// the compute's Postgres and a fake endpoint storage.
func TestLFC(t *testing.T) {
	storage := lfctest.NewStorage(t)
	noteSecret("the endpoint storage token", lfcToken)
	spec := defaultSpec()
	spec["tenant_id"], spec["timeline_id"], spec["endpoint_id"] = lfcTenant, lfcTimeline, lfcEndpoint
	spec["endpoint_storage_addr"], spec["endpoint_storage_token"] = storage.Addr(), lfcToken
	spec["autoprewarm"] = true // a first start: endpoint storage has no state yet
	writeConfig(t, spec)
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	tok := computeToken(t)
	// Without the neon extension the requests are refused at once, and autoprewarm is
	// skipped (not recorded failed).
	code, b := call(t, "POST", "/lfc/offload", tok, nil)
	if code != 412 || !strings.Contains(string(b), "neon extension not installed") {
		t.Fatalf("POST /lfc/offload without the neon extension: %d %s\njournal:\n%s", code, b, journal(t, monitorUnit))
	}
	if code, b := call(t, "POST", "/lfc/prewarm", tok, nil); code != 412 {
		t.Errorf("POST /lfc/prewarm without the neon extension: %d %s", code, b)
	}
	if p := waitLFC(t, "/lfc/prewarm", 5*time.Second, func(lfcPrewarm) bool { return true }); p.Status != "not_prewarmed" {
		t.Errorf("autoprewarm without the neon extension: %+v", p)
	}

	// The stand-in neon extension in the database the monitor connects to (it stays
	// across restarts: PGDATA is kept).
	ctx := context.Background()
	admin := adminConn(t)
	if err := lfctest.Install(ctx, admin); err != nil {
		t.Fatal(err)
	}
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	// autoprewarm right after running: a first start finds no state (404): skipped.
	waitLFC(t, "/lfc/prewarm", 20*time.Second, func(p lfcPrewarm) bool { return p.Status == "skipped" })
	admin = adminConn(t)
	ctl := lfctest.Control{Conn: admin}
	content := bytes.Repeat([]byte("lfc-pages."), 10000)
	if err := ctl.SetState(ctx, content); err != nil {
		t.Fatal(err)
	}

	// Offload: 202, then completed with its timings; the state is in endpoint storage.
	if code, b := call(t, "POST", "/lfc/offload", tok, nil); code != 202 || len(b) != 0 {
		t.Fatalf("POST /lfc/offload: %d %s", code, b)
	}
	waitLFC(t, "/lfc/offload", 20*time.Second, func(p lfcPrewarm) bool { return p.Status == "completed" })
	code, raw := call(t, "GET", "/lfc/offload", tok, nil)
	if code != 200 || !strings.Contains(string(raw), `"state_upload_time_ms"`) {
		t.Errorf("GET /lfc/offload: %d %s", code, raw)
	}
	key := "/" + lfcTenant + "/" + lfcTimeline + "/" + lfcEndpoint + "/lfc_state"
	if _, ok := storage.Object(key); !ok {
		t.Fatalf("no object at %s after the offload; requests: %+v", key, storage.Requests())
	}

	// Prewarm: 202, 429 while it runs (and no offload meanwhile), progress, completed.
	if err := ctl.PrewarmSleep(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ctl.SetProgress(ctx, 1280, 1200, 80); err != nil {
		t.Fatal(err)
	}
	if code, b := call(t, "POST", "/lfc/prewarm", tok, nil); code != 202 {
		t.Fatalf("POST /lfc/prewarm: %d %s", code, b)
	}
	if code, b := call(t, "POST", "/lfc/prewarm", tok, nil); code != 429 || !strings.Contains(string(b), "Multiple requests for prewarm are not allowed") {
		t.Errorf("second POST /lfc/prewarm: %d %s", code, b)
	}
	if code, b := call(t, "POST", "/lfc/offload", tok, nil); code != 429 || !strings.Contains(string(b), "prewarm is in progress") {
		t.Errorf("POST /lfc/offload during a prewarm: %d %s", code, b)
	}
	waitLFC(t, "/lfc/prewarm", 10*time.Second, func(p lfcPrewarm) bool {
		return p.Status == "prewarming" && p.Total != nil && *p.Total == 1280 && *p.Prewarmed == 1200
	})
	done := waitLFC(t, "/lfc/prewarm", 20*time.Second, func(p lfcPrewarm) bool { return p.Status == "completed" })
	if done.Total == nil || *done.Total != 1280 || *done.Skipped != 80 {
		t.Errorf("completed prewarm: %+v", done)
	}
	if got, calls, err := ctl.LastPrewarmed(ctx); err != nil || calls != 1 || !bytes.Equal(got, content) {
		t.Errorf("Postgres was prewarmed with %d bytes in %d calls (%v), want the offloaded state", len(got), calls, err)
	}

	// DELETE cancels a running prewarm.
	if err := ctl.PrewarmSleep(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if code, b := call(t, "POST", "/lfc/prewarm?from_endpoint="+lfcEndpoint, tok, nil); code != 202 {
		t.Fatalf("POST /lfc/prewarm?from_endpoint: %d %s", code, b)
	}
	time.Sleep(300 * time.Millisecond) // the query is running in Postgres
	if code, b := call(t, "DELETE", "/lfc/prewarm", tok, nil); code != 202 {
		t.Fatalf("DELETE /lfc/prewarm: %d %s", code, b)
	}
	waitLFC(t, "/lfc/prewarm", 20*time.Second, func(p lfcPrewarm) bool { return p.Status == "cancelled" })
	if code, b := call(t, "POST", "/lfc/prewarm?from_endpoint=../x", tok, nil); code != 400 {
		t.Errorf("POST /lfc/prewarm?from_endpoint=../x: %d %s", code, b)
	}

	// The counters, and the token never in the journal.
	_, mb := call(t, "GET", "/metrics", "", nil)
	for _, line := range []string{"compute_ctl_lfc_prewarms_total 3", "compute_ctl_lfc_offloads_total 1", "compute_ctl_lfc_offload_errors_total 0", "compute_ctl_lfc_prewarm_errors_total 0"} {
		if !strings.Contains(string(mb), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if j := run(t, "/bin/journalctl", "--no-pager", "-o", "cat"); strings.Contains(j, lfcToken) {
		t.Error("the endpoint storage token is in the journal")
	}

	// With the monitor stopped the requests are 503, the states still read.
	run(t, "/bin/systemctl", "stop", monitorUnit)
	t.Cleanup(func() { runMayFail("/bin/systemctl", "start", monitorUnit) })
	if code, b := call(t, "POST", "/lfc/offload", tok, nil); code != 503 {
		t.Errorf("POST /lfc/offload without the monitor: %d %s", code, b)
	}
	if code, _ := call(t, "GET", "/lfc/prewarm", tok, nil); code != 200 {
		t.Errorf("GET /lfc/prewarm without the monitor: %d", code)
	}
}
