package system

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const monitorUnit = "compute-monitor.service"

// unitProp reads one property of a unit (systemctl show -p NAME --value).
func unitProp(t *testing.T, unit, name string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "/bin/systemctl", "show", "-p", name, "--value", unit))
}

// waitUnitActive waits until unit is active.
func waitUnitActive(t *testing.T, unit string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	st := ""
	for time.Now().Before(deadline) {
		out, _ := runMayFail("/bin/systemctl", "is-active", unit)
		if st = strings.TrimSpace(out); st == "active" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s is %q after %s\njournal:\n%s", unit, st, within, journal(t, unit))
}

// lastActiveRe is the reference's format of last_active: chrono's to_rfc3339 in UTC.
var lastActiveRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$`)

func TestMonitor(t *testing.T) {
	writeConfig(t, defaultSpec())
	restart(t)
	s := waitStatus(t, "running", "failed")
	if s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	// The monitor comes up with the compute (it is ready while it waits for running),
	// started by its timer a second after compute.target, off the start path.
	waitUnitActive(t, monitorUnit, 10*time.Second)
	offThePath := func(what string) {
		t.Helper()
		// The timer is armed when compute.target's start begins (its start job is part of
		// the same transaction); the monitor starts a second later, after the start's
		// work (compute-configure) is done.
		armed, err1 := strconv.ParseInt(unitProp(t, "compute-monitor.timer", "InactiveExitTimestampMonotonic"), 10, 64)
		mon, err2 := strconv.ParseInt(unitProp(t, monitorUnit, "ExecMainStartTimestampMonotonic"), 10, 64)
		configured, err3 := strconv.ParseInt(unitProp(t, "compute-configure.service", "ActiveEnterTimestampMonotonic"), 10, 64) // a oneshot with RemainAfterExit=: active once done
		if err1 != nil || err2 != nil || err3 != nil || mon-armed < 950_000 || mon < configured {
			t.Errorf("%s: compute-monitor started %d µs after its timer was armed and %d µs after compute-configure ended (%v, %v, %v); want about a second, and after",
				what, mon-armed, mon-configured, err1, err2, err3)
		}
	}
	offThePath("start")
	// Restarting the target does not restart the monitor on the start path: on systemd 252
	// it stays (and follows the compute into the new lifecycle); later versions stop it
	// and the timer starts it again a second later.
	inv := unitProp(t, monitorUnit, "InvocationID")
	run(t, "/bin/systemctl", "restart", "compute.target")
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status after restarting compute.target: %s: %s", s.Status, deref(s.Error))
	}
	time.Sleep(1500 * time.Millisecond) // past the timer
	waitUnitActive(t, monitorUnit, 10*time.Second)
	if unitProp(t, monitorUnit, "InvocationID") != inv {
		offThePath("restart of compute.target")
	}

	// A session of a spec role is activity: /status shows last_active, in the reference's
	// format, the time the session went idle (its state_change, read as the admin, whose
	// sessions are not activity). Before it, last_active is null or older. The session
	// stays open (idle) for a few rounds so that a sample sees it.
	before := time.Now()
	if s := status(t); s.LastActive != nil {
		if ts, err := time.Parse(time.RFC3339Nano, *s.LastActive); err != nil || !ts.Before(before) {
			t.Fatalf("last_active %q before any session of alice (%v)", *s.LastActive, err)
		}
	}
	c, err := login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatalf("alice login: %v", err)
	}
	if _, err := c.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	var idleSince time.Time
	if err := adminConn(t).QueryRow(context.Background(),
		"SELECT max(state_change) FROM pg_stat_activity WHERE usename = 'alice' AND state = 'idle'").Scan(&idleSince); err != nil {
		t.Fatalf("alice's state_change: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	c.Close(context.Background())
	var la string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if s := status(t); s.LastActive != nil {
			la = *s.LastActive
			if ts, err := time.Parse(time.RFC3339Nano, la); err == nil && !ts.Before(idleSince) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if la == "" {
		t.Fatalf("/status has no last_active after a session of alice\njournal:\n%s", journal(t, monitorUnit))
	}
	if !lastActiveRe.MatchString(la) {
		t.Errorf("last_active %q is not in the reference's format (RFC 3339, +00:00)", la)
	}
	if ts, err := time.Parse(time.RFC3339Nano, la); err != nil || ts.Before(idleSince) || ts.After(time.Now()) {
		t.Errorf("last_active %q is not the time alice's session went idle (%s): %v", la, idleSince.UTC().Format(time.RFC3339Nano), err)
	}

	// The downtime figures are on /metrics (Postgres answers: no current downtime).
	code, b := call(t, "GET", "/metrics", "", nil)
	body := string(b)
	if code != 200 || !strings.Contains(body, "# TYPE compute_pg_current_downtime_ms gauge") ||
		!strings.Contains(body, "compute_pg_current_downtime_ms 0\n") ||
		!strings.Contains(body, "# TYPE compute_pg_downtime_ms_total counter") {
		t.Errorf("/metrics: %d, downtime metrics missing or not 0:\n%s", code, body)
	}

	// The watchdog: a monitor that stops (SIGSTOP) sends no WATCHDOG=1, and systemd
	// restarts it. A drop-in shortens WatchdogSec= (and bounds the abort).
	dropDir := "/run/systemd/system/" + monitorUnit + ".d"
	if err := os.MkdirAll(dropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dropIn := dropDir + "/zz-watchdog-test.conf"
	if err := os.WriteFile(dropIn, []byte("[Service]\nWatchdogSec=2s\nTimeoutAbortSec=5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(dropIn)
		runMayFail("/bin/systemctl", "daemon-reload")
		runMayFail("/bin/systemctl", "try-restart", monitorUnit)
	})
	run(t, "/bin/systemctl", "daemon-reload")
	run(t, "/bin/systemctl", "restart", monitorUnit) // the new WatchdogSec= reaches the process at its start
	waitUnitActive(t, monitorUnit, 10*time.Second)
	if w := unitProp(t, monitorUnit, "WatchdogUSec"); w != "2s" {
		t.Fatalf("WatchdogUSec=%q after the drop-in", w)
	}
	time.Sleep(3 * time.Second) // well past one watchdog interval: a healthy monitor is not restarted
	restarts0, err := strconv.Atoi(unitProp(t, monitorUnit, "NRestarts"))
	if err != nil {
		t.Fatal(err)
	}
	pid := unitProp(t, monitorUnit, "MainPID")
	if pid == "" || pid == "0" {
		t.Fatalf("no MainPID for %s", monitorUnit)
	}
	time.Sleep(3 * time.Second)
	if n, _ := strconv.Atoi(unitProp(t, monitorUnit, "NRestarts")); n != restarts0 || unitProp(t, monitorUnit, "MainPID") != pid {
		t.Fatalf("a healthy monitor was restarted (NRestarts %d -> %d)\njournal:\n%s", restarts0, n, journal(t, monitorUnit))
	}
	pidN, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pidN, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pidN, syscall.SIGCONT) })
	deadline = time.Now().Add(30 * time.Second)
	restarted := false
	for time.Now().Before(deadline) {
		n, _ := strconv.Atoi(unitProp(t, monitorUnit, "NRestarts"))
		newPID := unitProp(t, monitorUnit, "MainPID")
		st, _ := runMayFail("/bin/systemctl", "is-active", monitorUnit)
		if n > restarts0 && newPID != pid && newPID != "0" && strings.TrimSpace(st) == "active" {
			restarted = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !restarted {
		t.Fatalf("systemd did not restart the stopped monitor within 30 s (NRestarts %s, MainPID %s)\njournal:\n%s",
			unitProp(t, monitorUnit, "NRestarts"), unitProp(t, monitorUnit, "MainPID"), journal(t, monitorUnit))
	}
	if j := journal(t, monitorUnit); !strings.Contains(j, "atchdog timeout") {
		t.Errorf("the journal of %s does not name the watchdog (a restart for another reason):\n%s", monitorUnit, j)
	}
	// The restarted monitor keeps what was published: last_active does not go back.
	laBefore, _ := time.Parse(time.RFC3339Nano, la)
	if s := status(t); s.LastActive == nil {
		t.Error("no last_active after the restart")
	} else if after, err := time.Parse(time.RFC3339Nano, *s.LastActive); err != nil || after.Before(laBefore) {
		t.Errorf("last_active after the restart: %s, before %s", *s.LastActive, la)
	}

	code, b = call(t, "POST", "/terminate", adminToken(t), nil)
	if code != 200 {
		t.Errorf("/terminate: %d %s", code, b)
	}
}
