package system

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"
)

// claimEnv makes the test binary claim compute-api's bus name and exit (see claimName);
// TestPrivileges runs it as postgres.
const claimEnv = "SYSTEST_CLAIM_BUS_NAME"

// claimName requests org.computetools.Compute1 on the system bus and reports the answer
// on stdout; exit 0 only if the name was granted.
func claimName() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx)
	if err != nil {
		fmt.Println("connect:", err)
		return 2
	}
	defer c.Close()
	if err := c.ClaimName(); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("granted")
	return 0
}

// runAsUser runs path as user (our test binary is root) and returns its output.
func runAsUser(user, path string, args ...string) (string, error) {
	res, err := execx.Run(context.Background(), execx.Cmd{Path: path, Args: args, User: user, Env: []string{claimEnv + "=" + os.Getenv(claimEnv)}})
	return string(res.Stdout) + string(res.Stderr), err
}

// TestPrivileges: compute-api runs as its own user, and every operation of the compute
// still works through the polkit rule (TestStandaloneLifecycle, TestEmptyThenConfigure and
// TestTerminateWhileEmpty drive them); here, that it is that user, that the rule gives it
// nothing more, and that postgres can neither manage units nor own compute-api's name.
func TestPrivileges(t *testing.T) {
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}

	// compute-api runs as compute-api (polkit is installed: no root drop-in).
	u, err := user.Lookup("compute-api")
	if err != nil {
		t.Fatalf("the package did not create the compute-api user: %v", err)
	}
	pid := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-api.service"))
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(st))
	if m == nil || m[1] != u.Uid || m[2] != u.Uid {
		t.Errorf("compute-api (pid %s) runs as uid %v, want %s (compute-api)", pid, m, u.Uid)
	}
	if d := run(t, "/bin/systemctl", "show", "-P", "DropInPaths", "compute-api.service"); strings.Contains(d, "no-polkit") {
		t.Errorf("the no-polkit drop-in is in place although polkit is installed: %s", d)
	}
	groups := run(t, "/usr/bin/id", "-nG", "compute-api")
	if !strings.Contains(" "+strings.TrimSpace(groups)+" ", " postgres ") {
		t.Errorf("compute-api is not in group postgres: %s", groups)
	}

	// Operations outside the rule are refused, for compute-api and for postgres; each
	// would show (Postgres restarted or stopped, a unit started) had it been allowed.
	pgPID := run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-postgres.service")
	for _, c := range []struct {
		user string
		args []string
	}{
		{"compute-api", []string{"restart", "compute-postgres.service"}},
		{"compute-api", []string{"stop", "compute-configure.service"}},
		{"compute-api", []string{"start", "compute-monitor.service"}},
		{"compute-api", []string{"kill", "compute-init.service"}},
		{"compute-api", []string{"set-property", "--runtime", "compute-postgres.service", "MemoryHigh=64M"}},
		{"postgres", []string{"stop", "compute-postgres.service"}},
		{"postgres", []string{"kill", "-s", "SIGQUIT", "compute-postgres.service"}},
		{"postgres", []string{"restart", "compute-configure.service"}},
		{"postgres", []string{"stop", "compute-init.service"}},
		{"postgres", []string{"stop", "compute-api.service"}},
		{"postgres", []string{"set-property", "--runtime", "compute-postgres.service", "MemoryHigh=64M"}},
		// The vm-monitor's user: set-property on compute-postgres.service only (below).
		{"compute-vm-monitor", []string{"set-property", "--runtime", "compute-api.service", "MemoryHigh=64M"}},
		{"compute-vm-monitor", []string{"set-property", "--runtime", "compute-vm-monitor.service", "MemoryHigh=64M"}},
		{"compute-vm-monitor", []string{"stop", "compute-postgres.service"}},
		{"compute-vm-monitor", []string{"restart", "compute-postgres.service"}},
		{"compute-vm-monitor", []string{"kill", "compute-postgres.service"}},
	} {
		out, err := runAsUser(c.user, "/bin/systemctl", append([]string{"--no-ask-password"}, c.args...)...)
		if err == nil || !strings.Contains(out, "Access denied") && !strings.Contains(out, "Interactive authentication required") {
			t.Errorf("systemctl %v as %s: %v %s, want a refusal", c.args, c.user, err, out)
		}
	}
	for _, u := range []string{"compute-api", "compute-vm-monitor"} {
		if out, err := runAsUser(u, "/usr/bin/systemd-run", "--no-ask-password", "--unit=compute-escape", "/bin/true"); err == nil {
			t.Errorf("%s started a transient unit: %s", u, out)
		}
	}
	// What the rule grants the vm-monitor's user, on systemd 252 under real polkitd: the
	// action SetUnitProperties asks for (manage-units, unit and verb "set-property").
	if _, err := user.Lookup("compute-vm-monitor"); err != nil {
		t.Errorf("the package did not create the compute-vm-monitor user: %v", err)
	}
	if out, err := runAsUser("compute-vm-monitor", "/bin/systemctl", "--no-ask-password", "set-property", "--runtime", "compute-postgres.service", "MemoryHigh=3G"); err != nil {
		t.Errorf("compute-vm-monitor setting MemoryHigh of compute-postgres: %v %s", err, out)
	} else if got := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "MemoryHigh", "compute-postgres.service")); got != strconv.Itoa(3<<30) {
		t.Errorf("MemoryHigh of compute-postgres after the vm-monitor's user set it: %s", got)
	}
	if out, err := runAsUser("compute-vm-monitor", "/bin/systemctl", "--no-ask-password", "set-property", "--runtime", "compute-postgres.service", "MemoryHigh=infinity"); err != nil {
		t.Errorf("compute-vm-monitor resetting MemoryHigh of compute-postgres: %v %s", err, out)
	}
	if now := run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-postgres.service"); now != pgPID {
		t.Errorf("postgres changed from pid %s to %s", strings.TrimSpace(pgPID), strings.TrimSpace(now))
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-monitor.service"); strings.TrimSpace(st) == "active" {
		// compute-monitor.timer starts it by itself a second after compute.target: only
		// a start by compute-api would be a fault, and that was refused above.
		t.Log("compute-monitor is active (its timer)")
	}
	if s := status(t); s.Status != "running" {
		t.Errorf("status %s after the refused operations", s.Status)
	}

	// The internal port (no token) serves only some local users: compute-api, in its
	// sandbox, asks the kernel who owns each caller's socket. POST /grants (admin role)
	// serves INTERNAL_HTTP_ADMIN_USERS (root, compute-api): nobody and postgres (every
	// backend, so SQL making HTTP requests) get 403 and a line in the journal; root is
	// served (the route answers, whatever it says about the empty body).
	// /extension_server serves INTERNAL_HTTP_USERS, postgres among them.
	internalPost := func(who, path string) string {
		out, _ := runAsUser(who, "/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
			"-H", "Content-Type: application/json", "-d", "{}", "http://127.0.0.1:3081"+path)
		return strings.TrimSpace(out)
	}
	for _, who := range []string{"nobody", "postgres"} {
		if got := internalPost(who, "/grants"); got != "403" {
			t.Errorf("POST /grants on the internal port as %s: %q, want 403", who, got)
		}
	}
	if got := internalPost("nobody", "/extension_server/x.tar.zst"); got != "403" {
		t.Errorf("POST /extension_server on the internal port as nobody: %q, want 403", got)
	}
	for _, c := range []struct{ who, path string }{{"root", "/grants"}, {"postgres", "/extension_server/x.tar.zst"}} {
		if got := internalPost(c.who, c.path); got == "403" || got == "000" || got == "" {
			t.Errorf("POST %s on the internal port as %s: %q, want an answer of the route", c.path, c.who, got)
		}
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	waitJournal(t, "compute-api.service", "uid "+nobody.Uid+": the caller's user is not in INTERNAL_HTTP_ADMIN_USERS")
	waitJournal(t, "compute-api.service", "uid "+pgUser.Uid+": the caller's user is not in INTERNAL_HTTP_ADMIN_USERS")
	waitJournal(t, "compute-api.service", "uid "+nobody.Uid+": the caller's user is not in INTERNAL_HTTP_USERS")

	// postgres may not own compute-api's bus name: the bus refuses by policy, not merely
	// because compute-api holds it.
	// A copy that the other users can run.
	self := execxtest.SelfForOthers(t)
	t.Setenv(claimEnv, "1")
	out, err := runAsUser("postgres", self)
	if err == nil || !strings.Contains(out, "not allowed to own") {
		t.Errorf("postgres claiming org.computetools.Compute1: %v %s, want a policy refusal", err, out)
	}
	out, err = runAsUser("nobody", self)
	if err == nil || !strings.Contains(out, "not allowed to own") {
		t.Errorf("nobody claiming org.computetools.Compute1: %v %s, want a policy refusal", err, out)
	}
}

// TestSecurityExposure prints `systemd-analyze security` for each service unit of ours
// (the table in docs/security.md; NeonVM's helper templates by an instance; the timer is
// no service and has no figure) and holds the units off the start path, which can take
// the whole sandbox, to the goal.
func TestSecurityExposure(t *testing.T) {
	units := []string{"compute-api.service", "compute-init.service", "compute-postgres.service",
		"compute-configure.service", "compute-lsn-lease.service", "compute-monitor.service", "compute-vm-monitor.service",
		"compute-resize-swap@1073741824.service", "compute-disk-quota@1048576.service", "compute-rsyslog.service"}
	re := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	var table strings.Builder
	table.WriteString("| unit | exposure | rating |\n|---|---|---|\n")
	for _, u := range units {
		out, _ := runMayFail("/usr/bin/systemd-analyze", "security", "--no-pager", u)
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("systemd-analyze security %s:\n%s", u, out)
			continue
		}
		fmt.Fprintf(&table, "| %s | %s | %s |\n", u, m[2], m[3])
		score, _ := strconv.ParseFloat(m[2], 64)
		switch u {
		case "compute-api.service", "compute-lsn-lease.service", "compute-monitor.service", "compute-vm-monitor.service":
			if score > 2.5 {
				t.Errorf("%s: exposure %.1f, goal 2.5 or below\n%s", u, score, out)
			}
		}
	}
	t.Logf("systemd-analyze security:\n%s", table.String())
}

// TestWithoutPolkit: on an image without polkit the generator runs compute-api as root
// (systemd then lets only root manage units), and the compute works as before.
func TestWithoutPolkit(t *testing.T) {
	const svc = "/usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service"
	const aside = "/root/org.freedesktop.PolicyKit1.service.aside"
	if err := os.Rename(svc, aside); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Rename(aside, svc); err != nil {
			t.Error(err)
		}
		runMayFail("/bin/systemctl", "unmask", "--runtime", "polkit.service")
		runMayFail("/bin/systemctl", "daemon-reload")
	})
	run(t, "/bin/systemctl", "stop", "polkit.service")
	run(t, "/bin/systemctl", "mask", "--runtime", "polkit.service")
	run(t, "/bin/systemctl", "daemon-reload")
	if d := run(t, "/bin/systemctl", "show", "-P", "DropInPaths", "compute-api.service"); !strings.Contains(d, "50-no-polkit.conf") {
		t.Fatalf("no root drop-in without polkit: %q", d)
	}
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	pid := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-api.service"))
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^Uid:\s+0\s`).Find(st); m == nil {
		t.Errorf("compute-api does not run as root without polkit:\n%s", st)
	}
	// Reconfigure (a restart of compute-configure) and terminate (a stop of Postgres, in
	// either mode) as root.
	body, _ := json.Marshal(map[string]any{"spec": defaultSpec(), "compute_ctl_config": map[string]any{"jwks": jwks}})
	if code, b := call(t, "POST", "/configure", computeToken(t), body); code != 200 {
		t.Errorf("/configure: %d %s", code, b)
	}
	if code, b := call(t, "POST", "/terminate?mode=immediate", adminToken(t), nil); code != 200 {
		t.Errorf("/terminate: %d %s", code, b)
	}
}
