package system

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/sktest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// The fault suite (issue 12, item 9): each fault is a subtest that injects it into the
// installed compute under real systemd and checks the documented outcome (the table in
// docs/security.md, "Fault suite"): the status and its reason, the reason in the journal,
// and that nothing is lost (standalone data survives; a spec is never half-applied
// without the status saying so). Neon-mode faults run against the fakes with short
// bounds from the environment file, so that the suite stays quick.

// journalSince returns what unit logged since the current lifecycle began.
func journalSince(t *testing.T, unit string) string {
	t.Helper()
	since := fmt.Sprintf("@%d", lifecycleStart.Add(-time.Second).Unix())
	return run(t, "/bin/journalctl", "--no-pager", "-o", "cat", "-u", unit, "--since", since)
}

// expectJournal waits (journald is asynchronous) until one of units logged every want
// since the current lifecycle began.
func expectJournal(t *testing.T, units []string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var all string
	for {
		all = ""
		for _, u := range units {
			all += journalSince(t, u)
		}
		missing := ""
		for _, w := range want {
			if !strings.Contains(all, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the journal of %v since the fault lacks %q:\n%s", units, missing, all)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectFailed checks the outcome of a fault that fails the compute: status failed with
// every want in the error, the same over GET /status, and the reason in the journal of
// one of units.
func expectFailed(t *testing.T, units []string, want ...string) statusResp {
	t.Helper()
	s := expectFailedLocal(t, units, want...)
	if api := status(t); api.Status != "failed" || deref(api.Error) != deref(s.Error) {
		t.Errorf("GET /status: %s %q, want failed %q", api.Status, deref(api.Error), deref(s.Error))
	}
	return s
}

// expectFailedLocal is expectFailed without GET /status (for a compute that never got
// the keys to check a token with).
func expectFailedLocal(t *testing.T, units []string, want ...string) statusResp {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	s := localStatus(t)
	for s.Status != "failed" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		s = localStatus(t)
	}
	if s.Status != "failed" {
		t.Fatalf("status %s, want failed (%v)", s.Status, want)
	}
	msg := deref(s.Error)
	if msg == "" {
		t.Error("failed without a reason")
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("/status error %q lacks %q", msg, w)
		}
	}
	// The journal has the reason: what was asked, and the error's text up to its first
	// character that a log line would escape.
	head, _, _ := strings.Cut(msg, `"`)
	if len(head) > 60 {
		head = head[:60]
	}
	expectJournal(t, units, append(want, head)...)
	t.Logf("outcome: failed: %s", msg)
	return s
}

// killUnitMain sends SIGKILL to the main process of unit.
func killUnitMain(t *testing.T, unit string) {
	t.Helper()
	run(t, "/bin/systemctl", "kill", "--signal=SIGKILL", "--kill-who=main", unit)
}

// callAsync sends a request in the background; the answer (or the transport error) comes
// on the channel.
type answer struct {
	code int
	body []byte
	err  error
}

func callAsync(method, path, tok string, body []byte) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(method, apiURL+path, strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := (&http.Client{Timeout: 120 * time.Second}).Do(req)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- answer{code: resp.StatusCode, body: b}
	}()
	return ch
}

func configureBody(t *testing.T, sp map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"spec": sp, "compute_ctl_config": map[string]any{"jwks": jwks}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeKept writes a row tagged tag into a table of appdb as alice: the data that must
// survive the fault.
func writeKept(t *testing.T, tag string) {
	t.Helper()
	c, err := login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatalf("alice login: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), "create table if not exists fault_kept(tag text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), "insert into fault_kept values ($1)", tag); err != nil {
		t.Fatal(err)
	}
}

// expectKept checks that the row tag is still there.
func expectKept(t *testing.T, tag string) {
	t.Helper()
	c, err := login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatalf("alice login after the fault: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from fault_kept where tag = $1", tag).Scan(&n); err != nil || n != 1 {
		t.Errorf("row %q after the fault: %d rows, %v", tag, n, err)
	}
}

// recoverRunning restarts the compute and expects it running with the row tag kept.
func recoverRunning(t *testing.T, tag string) {
	t.Helper()
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("after the fault, a restart ends %s: %s", s.Status, deref(s.Error))
	}
	expectKept(t, tag)
}

// blockRoleWrites holds a lock on pg_authid that lets logins in but makes any CREATE or
// ALTER ROLE wait: a spec apply stops in the middle. The lock goes with the returned
// connection (closed at the end of the test, or by a fault).
func blockRoleWrites(t *testing.T) *pgx.Conn {
	t.Helper()
	c := adminConn(t)
	if _, err := c.Exec(context.Background(), "begin; lock table pg_catalog.pg_authid in share mode"); err != nil {
		t.Fatalf("lock pg_authid: %v", err)
	}
	return c
}

// waitApplyBlocked waits until a session waits for the lock of blockRoleWrites.
func waitApplyBlocked(t *testing.T, c *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := c.QueryRow(context.Background(),
			"select count(*) from pg_catalog.pg_locks where relation = 'pg_catalog.pg_authid'::regclass and not granted").Scan(&n)
		if err != nil {
			t.Fatalf("pg_locks: %v", err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spec apply never waited for pg_authid (status %s)", localStatus(t).Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// specWithRole is the default spec with one more role: applying it writes pg_authid.
func specWithRole(name string) map[string]any {
	sp := defaultSpec()
	cl := sp["cluster"].(map[string]any)
	cl["roles"] = append(cl["roles"].([]role), role{Name: name, EncryptedPassword: ptr(md5Password(name+"-password", name))})
	return sp
}

func TestFaultsStandalone(t *testing.T) {
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}

	t.Run("postgres SIGKILLed while running", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		recoverRunningFresh(t)
		writeKept(t, "kill-running")
		killUnitMain(t, "compute-postgres.service")
		expectFailed(t, []string{"compute-postgres.service"}, "postgres failed (signal, killed KILL")
		recoverRunning(t, "kill-running")
	})

	t.Run("postgres SIGKILLed while configuring", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		recoverRunningFresh(t)
		writeKept(t, "kill-configuring")
		lock := blockRoleWrites(t)
		res := callAsync("POST", "/configure", computeToken(t), configureBody(t, specWithRole("fault_carol")))
		waitApplyBlocked(t, lock)
		if s := localStatus(t); s.Status != "configuration" {
			t.Errorf("while the apply waits: status %s, want configuration", s.Status)
		}
		killUnitMain(t, "compute-postgres.service")
		a := <-res
		if a.err != nil || a.code != 500 {
			t.Errorf("/configure during the kill: %d %s %v, want 500 with the reason", a.code, a.body, a.err)
		}
		expectFailed(t, []string{"compute-postgres.service", "compute-configure.service"})
		recoverRunning(t, "kill-configuring")
	})

	t.Run("compute-api SIGKILLed during /configure", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		recoverRunningFresh(t)
		lock := blockRoleWrites(t)
		res := callAsync("POST", "/configure", computeToken(t), configureBody(t, specWithRole("fault_dave")))
		waitApplyBlocked(t, lock)
		killUnitMain(t, "compute-api.service")
		if a := <-res; a.err == nil {
			t.Logf("/configure answered %d %s although compute-api was killed", a.code, a.body)
		}
		// The apply goes on without the API: once the lock goes, the compute is running
		// with the new spec.
		if _, err := lock.Exec(context.Background(), "commit"); err != nil {
			t.Fatal(err)
		}
		if s := waitStatus(t, "running", "failed"); s.Status != "running" {
			t.Errorf("after the kill: status %s: %s", s.Status, deref(s.Error))
		}
		waitAPI(t)
		// Documented outcome: a later /configure and /terminate work (S2's start-up
		// reconciliation of the state record covers a kill at any point).
		if code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, specWithRole("fault_dave"))); code != 200 {
			t.Errorf("a later /configure: %d %s", code, b)
		}
		if c, err := login(t, "fault_dave", "fault_dave-password", "appdb"); err != nil {
			t.Errorf("the role of the interrupted /configure: %v", err)
		} else {
			c.Close(context.Background())
		}
		if code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t)); code != 200 {
			t.Errorf("a later /terminate: %d %s", code, b)
		}
		recoverRunningFresh(t)
	})

	t.Run("compute-api SIGKILLed during /terminate", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		recoverRunningFresh(t)
		// Hold a session open in a transaction: the fast shutdown has to end it, which
		// gives the kill time to land while the termination is pending.
		c, err := login(t, "alice", alicePass, "appdb")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "begin; insert into fault_kept values ('uncommitted')"); err != nil {
			t.Fatal(err)
		}
		res := callAsync("POST", "/terminate", adminToken(t), nil)
		deadline := time.Now().Add(10 * time.Second)
		for s := localStatus(t); s.Status == "running" && time.Now().Before(deadline); s = localStatus(t) {
			time.Sleep(2 * time.Millisecond)
		}
		killUnitMain(t, "compute-api.service")
		t.Logf("compute-api killed with the status at %s", localStatus(t).Status)
		<-res
		if s := waitStatus(t, "terminated", "failed"); s.Status != "terminated" {
			t.Errorf("after the kill: status %s: %s", s.Status, deref(s.Error))
		}
		waitAPI(t)
		if code, b := callWithin(t, 30*time.Second, "POST", "/terminate", adminToken(t)); code != 200 && code != 201 {
			t.Errorf("a later /terminate: %d %s", code, b)
		}
		recoverRunningFresh(t)
		if code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, defaultSpec())); code != 200 {
			t.Errorf("a later /configure: %d %s", code, b)
		}
	})

	// compute-api killed right after recording a pending status, before it asked systemd
	// (issue 12, item 8): that window cannot be hit from outside, so the test makes the
	// record such a death leaves (compute-api stopped, the status set as its last write,
	// the units untouched) and starts compute-api again. Documented outcome: a later
	// /configure and /terminate work. This needs the start-up reconciliation of the state
	// record (helper S2's part of issue 12); without it both answer 412 for good.
	for _, pending := range []state.Status{state.ConfigurationPending, state.TerminationPendingFast} {
		t.Run("compute-api killed after recording "+string(pending)+" (simulated)", func(t *testing.T) {
			writeConfig(t, defaultSpec())
			recoverRunningFresh(t)
			run(t, "/bin/systemctl", "stop", "compute-api.service")
			store, err := state.Open(stateDir)
			if err != nil {
				t.Fatal(err)
			}
			if pending == state.ConfigurationPending {
				// As /configure does before it records configuration_pending.
				pendingFile := filepath.Join(stateDir, "config.pending.json")
				if err := os.WriteFile(pendingFile, configureBody(t, specWithRole("fault_gina")), 0o640); err != nil {
					t.Fatal(err)
				}
				run(t, "/bin/chgrp", "postgres", pendingFile)
			}
			statetest.MustSet(t, store, pending, nil)
			run(t, "/bin/systemctl", "start", "compute-api.service")
			waitAPI(t)
			t.Logf("after compute-api's start: status %s", localStatus(t).Status)
			const s2 = " (the start-up reconciliation, control.Reconcile)"
			if pending == state.ConfigurationPending {
				if code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, specWithRole("fault_frank"))); code != 200 {
					t.Errorf("a later /configure: %d %s"+s2, code, b)
				}
			}
			if code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t)); code != 200 && code != 201 {
				t.Errorf("a later /terminate: %d %s"+s2, code, b)
			}
			if s := localStatus(t); s.Status != "terminated" {
				t.Errorf("after /terminate: status %s"+s2, s.Status)
			}
			recoverRunningFresh(t)
			if code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, defaultSpec())); code != 200 {
				t.Errorf("/configure after a restart: %d %s", code, b)
			}
		})
	}

	t.Run("dbus-daemon restarted", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		recoverRunningFresh(t)
		// compute-monitor starts a second after the compute (its timer): wait for it, so
		// that it too has a bus connection to lose.
		waitUnitActive(t, monitorUnit, 20*time.Second)
		apiPID := unitProp(t, "compute-api.service", "MainPID")
		monitorPID := unitProp(t, monitorUnit, "MainPID")
		run(t, "/bin/systemctl", "restart", "dbus.service")
		// The compute keeps running. compute-api (and compute-monitor) lose their bus
		// connections, which do not come back: each exits saying so, and systemd
		// restarts it with new connections.
		if s := localStatus(t); s.Status != "running" {
			t.Errorf("after the dbus restart: status %s", s.Status)
		}
		deadline := time.Now().Add(20 * time.Second)
		for unitProp(t, "compute-api.service", "MainPID") == apiPID || unitProp(t, "compute-api.service", "ActiveState") != "active" {
			if time.Now().After(deadline) {
				t.Fatalf("compute-api was not restarted after the dbus restart:\n%s", journalSince(t, "compute-api.service"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		expectJournal(t, []string{"compute-api.service"}, "the connection to the system bus is lost")
		expectJournal(t, []string{monitorUnit}, "the connection to the system bus is lost")
		for unitProp(t, monitorUnit, "MainPID") == monitorPID || unitProp(t, monitorUnit, "ActiveState") != "active" {
			if time.Now().After(deadline) {
				t.Fatalf("compute-monitor was not restarted after the dbus restart:\n%s", journalSince(t, monitorUnit))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s := localStatus(t); s.Status != "running" {
			t.Errorf("after compute-api's restart: status %s", s.Status)
		}
		waitAPI(t)
		// The API reaches the monitor over the new bus: the LFC routes answer from the
		// monitor (no neon extension here: 412), not 503 (monitor unavailable).
		for {
			code, b := call(t, "POST", "/lfc/offload", computeToken(t), nil)
			if code == 412 && strings.Contains(string(b), "neon extension not installed") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("POST /lfc/offload after the dbus restart: %d %s\n%s", code, b, journalSince(t, monitorUnit))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, specWithRole("fault_erin"))); code != 200 {
			t.Errorf("/configure after the dbus restart: %d %s\n%s", code, b, journalSince(t, "compute-api.service"))
		}
		if code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t)); code != 200 {
			t.Errorf("/terminate after the dbus restart: %d %s\n%s", code, b, journalSince(t, "compute-api.service"))
		}
		recoverRunningFresh(t)
	})

	t.Run("PGDATA disk full", func(t *testing.T) { diskFull(t) })

	// Not a fault but what a control plane may do: restart a compute many times in a
	// row. Every start must bring the whole compute, the monitor (started by its timer)
	// included: systemd's default start rate limit (5 in 10 s) once left it out.
	t.Run("restarted often", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		for range 7 {
			recoverRunningFresh(t)
		}
		waitUnitActive(t, monitorUnit, 20*time.Second)
		if out, _ := runMayFail("/bin/systemctl", "list-units", "--failed", "--plain", "--no-legend", "compute*"); strings.TrimSpace(out) != "" {
			t.Errorf("failed units after quick restarts:\n%s", out)
		}
	})
}

// waitAPI waits until compute-api answers /status again (after it was killed or lost its
// bus).
func waitAPI(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", apiURL+"/status", nil)
		req.Header.Set("Authorization", "Bearer "+computeToken(t))
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("compute-api does not answer /status: %v\n%s", err, journalSince(t, "compute-api.service"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const (
	stateDir     = "/run/compute"
	smallPGData  = "/var/db/postgres/small"
	smallFSBytes = 128 << 20
)

// diskFull runs a compute whose PGDATA is a small tmpfs, fills it, and asks for a spec
// that needs space (a new database): the compute fails with the reason, and once space
// is back a restart runs the whole spec with the data kept.
func diskFull(t *testing.T) {
	orig, err := os.ReadFile(defaultsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(smallPGData, 0o700); err != nil {
		t.Fatal(err)
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%s,gid=%s", smallFSBytes, pgUser.Uid, pgUser.Gid)
	if out, err := runMayFail("/bin/mount", "-t", "tmpfs", "-o", opts, "compute-e2e-small", smallPGData); err != nil {
		t.Fatalf("cannot mount a small tmpfs for PGDATA in this container: %v %s", err, out)
	}
	t.Cleanup(func() {
		runMayFail("/bin/systemctl", "stop", "compute.target", "compute-configure.service", "compute-postgres.service", "compute-init.service")
		os.WriteFile(defaultsFile, orig, 0o644)
		runMayFail("/bin/umount", smallPGData)
	})
	if err := os.WriteFile(defaultsFile, append(append([]byte{}, orig...), []byte("\nPGDATA="+smallPGData+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, defaultSpec())
	recoverRunningFresh(t)
	writeKept(t, "disk-full")

	// Fill the file system up to 1 MB, as root (a file postgres cannot remove).
	var st syscall.Statfs_t
	if err := syscall.Statfs(smallPGData, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	fill := filepath.Join(smallPGData, "filler")
	if free > 1<<20 {
		if out, err := runMayFail("/usr/bin/fallocate", "-l", strconv.FormatInt(free-(1<<20), 10), fill); err != nil {
			t.Fatalf("fallocate: %v %s", err, out)
		}
	}
	sp := defaultSpec()
	sp["cluster"].(map[string]any)["databases"] = append(sp["cluster"].(map[string]any)["databases"].([]map[string]any),
		map[string]any{"name": "fault_bigdb", "owner": "alice"})
	code, b := call(t, "POST", "/configure", computeToken(t), configureBody(t, sp))
	if code != 500 {
		t.Errorf("/configure on a full disk: %d %s, want 500", code, b)
	}
	expectFailed(t, []string{"compute-configure.service", "compute-postgres.service"}, "No space left on device")
	// Space back: a restart applies the whole spec, the data is kept.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, sp)
	recoverRunning(t, "disk-full")
	c, err := login(t, "alice", alicePass, "fault_bigdb")
	if err != nil {
		t.Errorf("the database of the spec after the disk has space again: %v", err)
	} else {
		c.Close(context.Background())
	}
}

// recoverRunningFresh restarts the compute and expects it running (a new PGDATA).
func recoverRunningFresh(t *testing.T) {
	t.Helper()
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s\n%s", s.Status, deref(s.Error), journalSince(t, "compute-init.service"))
	}
}

// neonFaultBounds are the short bounds of the neon fault runs (environment file lines).
var neonFaultBounds = []string{
	"COMPUTE_BASEBACKUP_ATTEMPTS=2",
	"COMPUTE_PAGESERVER_IDLE_TIMEOUT=1s",
	"COMPUTE_SYNC_SAFEKEEPERS_TIMEOUT=2s",
	"COMPUTE_CONTROL_PLANE_TIMEOUT=2s",
}

func TestFaultsNeon(t *testing.T) {
	f, orig := neonSetup(t)
	shim := f.SyncShim
	var addrs struct {
		ArchiveBytes int `json:"archive_bytes"`
	}
	if b, err := os.ReadFile(neonAddrFile); err != nil || json.Unmarshal(b, &addrs) != nil || addrs.ArchiveBytes == 0 {
		t.Fatalf("archive size from %s: %v", neonAddrFile, err)
	}
	reset := func(t *testing.T) {
		sktest.SetShimFail(t, shim, "")
		sktest.SetShimHang(t, shim, false)
		sktest.SetShimLSN(t, shim, neonStartLSN)
		f.setSafekeepers(t, "")
		f.http(t, "PUT", "/fake/pageserver", nil)
		f.http(t, "PUT", "/fake/cplane-fault", nil)
		writeDefaults(t, orig, f, neonFaultBounds...)
		writeConfig(t, f.spec("Primary"))
	}
	t.Cleanup(func() { reset(t) })
	initUnits := []string{"compute-init.service"}

	pageserver := []struct {
		name  string
		query string
		want  []string
	}{
		{"pageserver refuses", "refuse=1", []string{"basebackup failed after 2 attempts", "refusing connections"}},
		{"pageserver drops mid-stream", "drop_after=" + strconv.Itoa(addrs.ArchiveBytes/2), []string{"basebackup failed after 2 attempts", "basebackup stream"}},
		{"pageserver errors after data", "error_after_data=1", []string{"basebackup failed after 2 attempts", "injected error after the data"}},
		{"pageserver stalls", "stall=1&stall_after=" + strconv.Itoa(addrs.ArchiveBytes/2), []string{"basebackup failed after 2 attempts", "pageserver stalled: no data for 1s"}},
	}
	for _, tc := range pageserver {
		t.Run(tc.name, func(t *testing.T) {
			reset(t)
			f.http(t, "PUT", "/fake/pageserver?"+tc.query, nil)
			restart(t)
			expectFailed(t, initUnits, tc.want...)
			if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-postgres.service"); strings.TrimSpace(st) == "active" {
				t.Error("postgres runs on a failed basebackup")
			}
		})
	}

	t.Run("safekeepers unsynced", func(t *testing.T) {
		reset(t)
		const reason = "no quorum of safekeepers (fault suite)"
		sktest.SetShimFail(t, shim, reason)
		restart(t)
		expectFailed(t, initUnits, "sync safekeepers", reason)
	})

	t.Run("safekeepers down", func(t *testing.T) {
		reset(t)
		f.http(t, "PUT", "/fake/safekeepers?down=1", nil)
		sktest.SetShimHang(t, shim, true)
		restart(t)
		expectFailed(t, initUnits, "sync safekeepers: no answer within 2s")
	})

	cplane := []struct {
		name, query string
		want        []string
	}{
		{"control plane 502", "status=502", []string{"fetch config: 3 attempts failed", "502 Bad Gateway"}},
		{"control plane 503", "status=503", []string{"fetch config: 3 attempts failed", "503 Service Unavailable"}},
		{"control plane garbage", "garbage=1", []string{"fetch config: 3 attempts failed", "decode control plane response"}},
	}
	for _, tc := range cplane {
		t.Run(tc.name, func(t *testing.T) {
			reset(t)
			body, _ := json.Marshal(map[string]any{"status": "attached", "spec": f.spec("Primary"), "compute_ctl_config": map[string]any{"jwks": jwks}})
			f.http(t, "PUT", "/fake/cplane", body)
			// The token as the README says: a systemd credential that only compute-init and
			// compute-api load (through the generator's drop-ins).
			installToken(t, f.cplaneToken)
			writeDefaults(t, orig, f, append(neonFaultBounds, "CONTROL_PLANE_URI="+f.ControlPlane)...)
			writeRaw(t, []byte("{}\n"))
			f.http(t, "PUT", "/fake/cplane-fault?"+tc.query, nil)
			before := len(f.log(t).ControlPlane)
			restart(t)
			// The compute never got keys for tokens (they come with the config).
			expectFailedLocal(t, initUnits, tc.want...)
			// compute-init's three attempts (its outcome says so above), and compute-api's
			// own requests for the key set (retried every 5 s) besides.
			if n := len(f.log(t).ControlPlane) - before; n < 3 {
				t.Errorf("%d control plane requests, want at least compute-init's 3", n)
			}
		})
	}

	// And with the faults gone, the same compute starts.
	t.Run("recovery", func(t *testing.T) {
		reset(t)
		startNeon(t, "running")
	})
}
