package system

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The post-termination action (COMPUTE_ON_TERMINATED) of compute-api. The other tests
// read the final status after /terminate or a failed start, so TestMain turns the action
// off for them with a drop-in (onTerminatedDropIn); the tests here take it away.
const (
	onTerminatedDropIn = "/run/systemd/system/compute-api.service.d/zz-system-test-on-terminated.conf"
	poweroffDropIn     = "/run/systemd/system/poweroff.target.d/zz-system-test-refuse.conf"
)

// setOnTerminated sets COMPUTE_ON_TERMINATED for compute-api through the test's drop-in
// ("" removes it: the package default applies) and reloads systemd.
func setOnTerminated(t *testing.T, action string) {
	t.Helper()
	if action == "" {
		if err := os.Remove(onTerminatedDropIn); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(onTerminatedDropIn), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(onTerminatedDropIn, []byte("[Service]\nEnvironment=COMPUTE_ON_TERMINATED="+action+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "/bin/systemctl", "daemon-reload")
}

// unitsInactive waits until every unit is inactive (or failed); it reports the states
// of the ones that are not when the time is up.
func unitsInactive(t *testing.T, within time.Duration, units ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var active []string
		for _, u := range units {
			st, _ := runMayFail("/bin/systemctl", "is-active", u)
			if st = strings.TrimSpace(st); st != "inactive" && st != "failed" {
				active = append(active, u+"="+st)
			}
		}
		if len(active) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not stopped: %v\ncompute-api journal:\n%s", active, tail(journal(t, "compute-api.service"), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestTerminateStopsTheCompute: with the package default (COMPUTE_ON_TERMINATED unset:
// stop), an immediate /terminate (both modes are Postgres's fast shutdown; immediate
// only means no linger) leaves every unit of the compute stopped, compute-api included.
// /metrics carries the build tag the package was built with (BUILD_TAG of scripts/e2e.sh).
func TestTerminateStopsTheCompute(t *testing.T) {
	setOnTerminated(t, "")
	defer setOnTerminated(t, "none")
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}

	if tag := os.Getenv("COMPUTE_SYSTEM_TEST_BUILD_TAG"); tag != "" {
		_, mb := call(t, "GET", "/metrics", "", nil)
		if want := `compute_ctl_up{build_tag="` + tag + `",status="running"} 1`; !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, mb)
		}
	}

	before := strings.Count(journal(t, "compute-api.service"), "post-termination action taken")
	pj := journal(t, "compute-postgres.service")
	fastBefore := strings.Count(pj, "received fast shutdown request")
	immediateBefore := strings.Count(pj, "received immediate shutdown request")
	code, b := call(t, "POST", "/terminate?mode=immediate", adminToken(t), nil)
	if code != 200 || strings.TrimSpace(string(b)) != `{"lsn":null}` {
		t.Fatalf("/terminate: %d %s", code, b)
	}
	unitsInactive(t, 60*time.Second, "compute.target", "compute-api.service", "compute-postgres.service",
		"compute-init.service", "compute-configure.service", "compute-monitor.service", "compute-monitor.timer")
	j := journal(t, "compute-api.service")
	if n := strings.Count(j, "post-termination action taken"); n != before+1 {
		t.Errorf("post-termination actions logged: %d, want %d\n%s", n, before+1, tail(j, 30))
	}
	// Postgres had the fast shutdown (SIGINT), not the immediate one (SIGQUIT).
	pj = journal(t, "compute-postgres.service")
	if strings.Count(pj, "received fast shutdown request") != fastBefore+1 || strings.Count(pj, "received immediate shutdown request") != immediateBefore {
		t.Errorf("not one fast shutdown in the Postgres journal:\n%s", tail(pj, 30))
	}
	// The final status is still on record.
	if s := localStatus(t); s.Status != "terminated" {
		t.Errorf("status after the stop: %s", s.Status)
	}
}

// TestTerminatePowerOffIsAskedFor: poweroff cannot be carried out in the shared test
// container, so the seam is systemd itself: poweroff.target refuses manual starts
// (RefuseManualStart=, runtime drop-in), and compute-api's start of it over D-Bus is
// refused there; its journal shows the request and systemd's refusal, and nothing else
// was stopped. Before, the polkit rule: compute-api may start poweroff.target only while
// /etc/default/compute-tools says poweroff.
func TestTerminatePowerOffIsAskedFor(t *testing.T) {
	if err := os.MkdirAll(filepath.Dir(poweroffDropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(poweroffDropIn, []byte("[Unit]\nRefuseManualStart=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(poweroffDropIn)
		run(t, "/bin/systemctl", "daemon-reload")
	}()
	setOnTerminated(t, "poweroff")
	defer setOnTerminated(t, "none")
	if got := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-p", "RefuseManualStart", "--value", "poweroff.target")); got != "yes" {
		t.Fatalf("poweroff.target RefuseManualStart=%q: the seam is not in place, not going on (it would power off)", got)
	}
	// polkit lets compute-api start poweroff.target only while the settings file says
	// poweroff (the generator's drop-in): set for the unit alone (the test's drop-in),
	// the start is refused by polkit...
	startPoweroff := func() string {
		out, err := runAsUser("compute-api", "/bin/systemctl", "--no-ask-password", "start", "poweroff.target")
		if err == nil {
			t.Fatal("compute-api started poweroff.target")
		}
		return out
	}
	if out := startPoweroff(); !strings.Contains(out, "Access denied") && !strings.Contains(out, "Interactive authentication required") {
		t.Fatalf("poweroff.target without the setting in the file: %s, want polkit's refusal", out)
	}
	// ...and with it in the file, polkit lets it through to systemd (which refuses it
	// here: the seam).
	orig, err := os.ReadFile("/etc/default/compute-tools")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/default/compute-tools", append(orig, []byte("\nCOMPUTE_ON_TERMINATED=poweroff\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile("/etc/default/compute-tools", orig, 0o644)
		run(t, "/bin/systemctl", "daemon-reload")
	}()
	run(t, "/bin/systemctl", "daemon-reload")
	if _, err := os.Stat("/run/systemd/generator/compute-api.service.d/50-poweroff.conf"); err != nil {
		t.Fatalf("the generator wrote no poweroff drop-in: %v", err)
	}
	if out := startPoweroff(); !strings.Contains(strings.ToLower(out), "refuse") {
		t.Fatalf("poweroff.target with the setting in the file: %s, want systemd's refusal (past polkit)", out)
	}
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	before := strings.Count(journal(t, "compute-api.service"), "post-termination action failed")
	code, b := call(t, "POST", "/terminate?mode=immediate", adminToken(t), nil)
	if code != 200 {
		t.Fatalf("/terminate: %d %s", code, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	var line string
	for line == "" {
		j := journal(t, "compute-api.service")
		if strings.Count(j, "post-termination action failed") > before {
			for _, l := range strings.Split(j, "\n") {
				if strings.Contains(l, "post-termination action failed") {
					line = l
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no poweroff request logged:\n%s", tail(j, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(line, "action=poweroff") || !strings.Contains(line, "poweroff.target") || !strings.Contains(strings.ToLower(line), "refuse") {
		t.Errorf("the poweroff request did not reach systemd: %s", line)
	}
	// Nothing was stopped: the API still serves the final status.
	if s := status(t); s.Status != "terminated" {
		t.Errorf("status %s, want terminated", s.Status)
	}
}
