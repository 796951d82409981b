package system

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

const (
	vmMonitorUnit = "compute-vm-monitor.service"
	envFile       = "/etc/default/compute-tools"
	vmMonitorURL  = "ws://127.0.0.1:10301/monitor"
	generatorWant = "/run/systemd/generator/compute.target.wants/" + vmMonitorUnit
	hogUnit       = "vmmon-hog.service"
	mib           = 1 << 20
	// hogEnv makes the test binary a memory hog (see memoryHog).
	hogEnv = "VMMON_HOG_BYTES"
	// agentEnv makes the test binary an agent for bench/vm-monitor-usage.sh (see
	// benchAgent).
	agentEnv = "VMMON_AGENT_FOR"
)

// benchAgent is the test binary run by bench/vm-monitor-usage.sh as the autoscaler
// agent: it connects to the vm-monitor and runs the agent's health check every 5 s for
// the duration agentEnv names, then prints how many succeeded and failed. It exits 1 when
// it cannot connect or any check failed.
func benchAgent() int {
	d, err := time.ParseDuration(os.Getenv(agentEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	a, err := agenttest.Dial(ctx, vmMonitorURL, agenttest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer a.Close()
	results := a.HealthChecks(ctx, 5*time.Second)
	ok, failed := 0, 0
	for {
		select {
		case err := <-results:
			if err == nil {
				ok++
			} else {
				failed++
			}
		case <-ctx.Done():
			fmt.Printf("health checks: %d ok, %d failed\n", ok, failed)
			if failed > 0 {
				return 1
			}
			return 0
		case <-a.Done():
			fmt.Printf("health checks: %d ok, %d failed; the connection ended: %v\n", ok, failed, a.Err())
			return 1
		}
	}
}

// memoryHog is the test binary run as hogUnit: it allocates and touches the bytes hogEnv
// names, tells systemd it is ready (Type=notify), frees them on SIGUSR1 and exits on
// SIGTERM.
func memoryHog() int {
	n, err := strconv.ParseUint(os.Getenv(hogEnv), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM)
	held := make([]byte, n)
	for i := 0; i < len(held); i += 4096 {
		held[i] = 1
	}
	_ = sysd.Ready(fmt.Sprintf("holding %d MiB", n/mib))
	for s := range sigs {
		if s == syscall.SIGTERM {
			return 0
		}
		runtime.KeepAlive(held)
		held = nil
		debug.FreeOSMemory()
		_ = sysd.Status("freed")
	}
	return 0
}

// wantsVMMonitor says whether compute.target wants the vm-monitor (its Wants=, which
// the generator's want adds to).
func wantsVMMonitor(t *testing.T) bool {
	t.Helper()
	return strings.Contains(" "+unitProp(t, "compute.target", "Wants")+" ", " "+vmMonitorUnit+" ")
}

// inDependencies says whether `systemctl list-dependencies compute.target` shows the
// vm-monitor: what compute.target wants, and (ConsistsOf, from PartOf=) a loaded
// vm-monitor.
func inDependencies(t *testing.T) bool {
	t.Helper()
	return strings.Contains(run(t, "/bin/systemctl", "list-dependencies", "--plain", "--no-pager", "compute.target"), vmMonitorUnit)
}

func memTotal(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// memoryHigh is MemoryHigh= of unit as `systemctl show` has it.
func memoryHigh(t *testing.T, unit string) string {
	t.Helper()
	return unitProp(t, unit, "MemoryHigh")
}

// waitJournal waits until the unit's journal contains want (journald is asynchronous).
func waitJournal(t *testing.T, unit, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(journal(t, unit), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the journal of %s lacks %q:\n%s", unit, want, journal(t, unit))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hasMemoryController says whether unit's cgroup, where the vm-monitor looks for it (the
// cgroup v2 hierarchy at /sys/fs/cgroup), has the memory controller's memory.stat, and
// why not.
func hasMemoryController(t *testing.T, unit string) (bool, string) {
	t.Helper()
	cg := unitProp(t, unit, "ControlGroup")
	if cg == "" {
		return false, unit + " has no control group"
	}
	p := filepath.Join("/sys/fs/cgroup", cg, "memory.stat")
	if _, err := os.Stat(p); err != nil {
		ctl, _ := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
		return false, fmt.Sprintf("%v (cgroup v2 controllers of a hybrid hierarchy: %q)", err, strings.TrimSpace(string(ctl)))
	}
	return true, ""
}

func TestVMMonitor(t *testing.T) {
	orig, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	dropIn := "/run/systemd/system/" + vmMonitorUnit + ".d/zz-test.conf"
	t.Cleanup(func() {
		_ = os.WriteFile(envFile, orig, 0o644)
		_ = os.Remove(dropIn)
		runMayFail("/bin/systemctl", "stop", vmMonitorUnit, hogUnit)
		runMayFail("/bin/systemctl", "daemon-reload")
		runMayFail("/bin/systemctl", "reset-failed", vmMonitorUnit, hogUnit)
		runMayFail("/bin/systemctl", "set-property", "--runtime", "compute-postgres.service", "MemoryHigh=infinity")
	})

	// Without AUTOSCALING (the packaged file): compute.target neither wants nor starts the
	// vm-monitor, and systemd never even looked at it (no skipped start either).
	writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s", s.Status, deref(s.Error))
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", vmMonitorUnit); strings.TrimSpace(st) != "inactive" {
		t.Errorf("%s is %q without AUTOSCALING", vmMonitorUnit, strings.TrimSpace(st))
	}
	if wantsVMMonitor(t) || inDependencies(t) {
		t.Error("compute.target wants the vm-monitor without AUTOSCALING")
	}
	for _, p := range []string{"InactiveExitTimestampMonotonic", "ConditionTimestampMonotonic"} {
		if v := unitProp(t, vmMonitorUnit, p); v != "0" {
			t.Errorf("%s=%s: systemd did something with the vm-monitor without AUTOSCALING", p, v)
		}
	}
	if _, err := os.Lstat(generatorWant); err == nil {
		t.Errorf("%s exists without AUTOSCALING", generatorWant)
	}

	// AUTOSCALING="true" (quoted, as a shell would have it), daemon-reload: the generator
	// adds the want, and `systemctl start compute.target` brings the vm-monitor up, on
	// the compute that runs (the README's steps).
	if err := os.WriteFile(envFile, append(append([]byte{}, orig...), "\nAUTOSCALING=\"true\"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "/bin/systemctl", "daemon-reload")
	if target, err := os.Readlink(generatorWant); err != nil || target != "/usr/lib/systemd/system/"+vmMonitorUnit {
		t.Fatalf("the generator's want: %q %v", target, err)
	}
	if !wantsVMMonitor(t) || !inDependencies(t) {
		t.Fatal("compute.target does not want the vm-monitor with AUTOSCALING=true")
	}
	pgPID := unitProp(t, "compute-postgres.service", "MainPID")
	run(t, "/bin/systemctl", "start", "compute.target")
	waitUnitActive(t, vmMonitorUnit, 10*time.Second)
	if s := localStatus(t); s.Status != "running" || unitProp(t, "compute-postgres.service", "MainPID") != pgPID {
		t.Errorf("starting the vm-monitor disturbed the compute: status %s, postgres pid %s -> %s", s.Status, pgPID, unitProp(t, "compute-postgres.service", "MainPID"))
	}
	// Its own user, no capability: the polkit rule lets it set MemoryHigh= (below).
	if u, caps := unitProp(t, vmMonitorUnit, "User"), unitProp(t, vmMonitorUnit, "CapabilityBoundingSet"); u != "compute-vm-monitor" || caps != "" {
		t.Errorf("%s runs as %q with capabilities %q, want compute-vm-monitor with none", vmMonitorUnit, u, caps)
	}
	if vu, err := user.Lookup("compute-vm-monitor"); err != nil {
		t.Errorf("no compute-vm-monitor user: %v", err)
	} else {
		pid := unitProp(t, vmMonitorUnit, "MainPID")
		st, err := os.ReadFile("/proc/" + pid + "/status")
		if m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(st)); err != nil || m == nil || m[1] != vu.Uid || m[2] != vu.Uid {
			t.Errorf("the vm-monitor (pid %s) runs as %v (%v), want uid %s", pid, m, err, vu.Uid)
		}
	}
	// The sandbox's exposure score, beside compute-api's, for the record (reported, not
	// asserted).
	for _, u := range []string{vmMonitorUnit, "compute-api.service"} {
		out, _ := runMayFail("/usr/bin/systemd-analyze", "security", "--no-pager", u)
		if i := strings.LastIndex(strings.TrimSpace(out), "\n"); i >= 0 {
			t.Logf("systemd-analyze security: %s", strings.TrimSpace(strings.TrimSpace(out)[i:]))
		}
	}
	waitJournal(t, vmMonitorUnit, "vm-monitor listening")
	// vsock: bound at any context ID, as compute-vm-monitor and without /dev/vsock (the
	// container has none), where the kernel has vsock; a warning where it has not, and
	// TCP goes on.
	switch j := journal(t, vmMonitorUnit); {
	case strings.Contains(j, "no vsock listener"):
		t.Log("no vsock in this kernel: TCP only")
	case strings.Contains(j, ", vsock "):
		t.Log("listening on vsock too")
	default:
		t.Errorf("neither a vsock listener nor the warning:\n%s", j)
	}

	// The agent: handshake and health check over TCP.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	agent, err := agenttest.Dial(ctx, vmMonitorURL, agenttest.Options{})
	if err != nil {
		t.Fatalf("agent: %v\njournal:\n%s", err, journal(t, vmMonitorUnit))
	}
	defer agent.Close()
	if agent.Version != 1 {
		t.Errorf("protocol version %d", agent.Version)
	}
	if err := agent.HealthCheck(ctx); err != nil {
		t.Fatalf("health check: %v", err)
	}
	// The connection's start sized the file cache on the vm-monitor's own connection: its
	// user logged in as the admin role over the socket (peer authentication through the
	// ident map), and the session stays open.
	pg := adminConn(t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := pg.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vm-monitor' AND usename = 'cloud_admin'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("no vm-monitor session as cloud_admin\njournal:\n%s", journal(t, vmMonitorUnit))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The connection's start set MemoryHigh= of compute-postgres, through systemd, at the
	// machine's memory; a grant of 2 GiB more than it has sets it at the grant's usable
	// memory (minus the 100 MiB sys buffer).
	if got, want := memoryHigh(t, "compute-postgres.service"), strconv.FormatUint(memTotal(t), 10); got != want {
		t.Errorf("MemoryHigh of compute-postgres after the agent connected: %s, want MemTotal %s", got, want)
	}
	grant := (memTotal(t)>>30 + 2) << 30
	if err := agent.NotifyUpscale(ctx, 1, grant); err != nil {
		t.Fatalf("upscale notification: %v\njournal:\n%s", err, journal(t, vmMonitorUnit))
	}
	usable := strconv.FormatUint(grant-100*mib, 10)
	if got := memoryHigh(t, "compute-postgres.service"); got != usable {
		t.Errorf("MemoryHigh of compute-postgres after %d MiB granted: %s, want %s", grant/mib, got, usable)
	}
	// Any client can connect and notify an "upscale": one below the grant is refused,
	// and the limit stays.
	var refused *agenttest.InternalError
	if err := agent.NotifyUpscale(ctx, 0.25, 512*mib); !errors.As(err, &refused) || !strings.Contains(refused.Text, "below the allocation applied last") {
		t.Errorf("upscale notification of 512 MiB after %d MiB: %v, want an InternalError", grant/mib, err)
	}
	if got := memoryHigh(t, "compute-postgres.service"); got != usable {
		t.Errorf("MemoryHigh of compute-postgres after a smaller \"upscale\": %s, want %s", got, usable)
	}
	// The polkit rule grants it to the vm-monitor's user only: postgres is refused.
	if out, err := runMayFail("/usr/sbin/runuser", "-u", "postgres", "--", "/bin/systemctl", "--no-ask-password", "set-property", "--runtime", "compute-postgres.service", "MemoryHigh=1G"); err == nil {
		t.Errorf("postgres may set MemoryHigh of compute-postgres: %s", out)
	}

	// The vm-monitor stops: the limit it set goes with it (ExecStopPost=), since the
	// agent goes on scaling the VM without it.
	agent.Close()
	run(t, "/bin/systemctl", "stop", vmMonitorUnit)
	if got := memoryHigh(t, "compute-postgres.service"); got != "infinity" {
		t.Errorf("MemoryHigh of compute-postgres after the vm-monitor stopped: %s, want infinity\njournal:\n%s", got, journal(t, vmMonitorUnit))
	}
	// Started again (AUTOSCALING is still true), an agent connects: the limit is back.
	run(t, "/bin/systemctl", "start", vmMonitorUnit)
	waitUnitActive(t, vmMonitorUnit, 10*time.Second)
	agent, err = agenttest.Dial(ctx, vmMonitorURL, agenttest.Options{})
	if err != nil {
		t.Fatalf("agent after the restart: %v\njournal:\n%s", err, journal(t, vmMonitorUnit))
	}
	defer agent.Close()
	// A round trip first, as after the first connection: the connection's start (which
	// sets the limit) has then been carried out.
	if err := agent.HealthCheck(ctx); err != nil {
		t.Fatalf("health check after the restart: %v", err)
	}
	if got, want := memoryHigh(t, "compute-postgres.service"), strconv.FormatUint(memTotal(t), 10); got != want {
		t.Errorf("MemoryHigh of compute-postgres after the agent reconnected: %s, want MemTotal %s", got, want)
	}

	if ok, why := hasMemoryController(t, "compute-postgres.service"); !ok {
		// No memory controller for the units (systemd-nspawn on a hybrid cgroup host,
		// whose memory controller is bound to cgroup v1): the watcher has no statistics,
		// so a downscale is refused: denied while it has not seen two samples (its
		// first 5 s), then an internal error (stale statistics), as the reference.
		waitJournal(t, vmMonitorUnit, "cgroup memory stats unavailable")
		ok, status, err := agent.RequestDownscale(ctx, 0.25, 384*mib)
		var ie *agenttest.InternalError
		switch {
		case err == nil && !ok && status == "haven't received enough cgroup memory stats yet":
		case errors.As(err, &ie) && strings.Contains(ie.Text, "haven't gotten cgroup memory stats recently enough"):
		default:
			t.Errorf("downscale without memory statistics: %v %q %v", ok, status, err)
		}
		t.Run("memory pressure", func(t *testing.T) {
			t.Skipf("the units' cgroups have no memory controller here: %s", why)
		})
	} else {
		t.Run("memory pressure", func(t *testing.T) { testMemoryPressure(t, dropIn) })
	}

	// AUTOSCALING unset again, the vm-monitor still running with an agent (so the limit
	// is set): after daemon-reload compute.target no longer wants it, and a restart of
	// the target alone (PartOf= restarts the vm-monitor with it) leaves it inactive (its
	// ExecCondition= skips the start; not failed) and the limit gone.
	waitUnitActive(t, vmMonitorUnit, 10*time.Second)
	octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ocancel()
	off, err := agenttest.Dial(octx, vmMonitorURL, agenttest.Options{})
	if err != nil {
		t.Fatalf("agent: %v\njournal:\n%s", err, journal(t, vmMonitorUnit))
	}
	defer off.Close()
	if got := memoryHigh(t, "compute-postgres.service"); got == "infinity" {
		t.Errorf("no MemoryHigh on compute-postgres with an agent connected")
	}
	if err := os.WriteFile(envFile, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "/bin/systemctl", "daemon-reload")
	if wantsVMMonitor(t) {
		t.Error("compute.target still wants the vm-monitor after AUTOSCALING was removed")
	}
	run(t, "/bin/systemctl", "restart", "compute.target")
	waitStatus(t, "running", "failed")
	// The vm-monitor's restart job may finish after the target's: wait until it has no
	// job left.
	deadline := time.Now().Add(15 * time.Second)
	for strings.Contains(run(t, "/bin/systemctl", "list-jobs", "--no-legend", "--no-pager"), vmMonitorUnit) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still has a job 15 s after compute.target restarted", vmMonitorUnit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", vmMonitorUnit); strings.TrimSpace(st) != "inactive" {
		t.Errorf("%s is %q after AUTOSCALING was removed and compute.target restarted, want inactive\njournal:\n%s", vmMonitorUnit, strings.TrimSpace(st), journal(t, vmMonitorUnit))
	}
	// systemd 252 leaves Result=success for a skipped start; its journal says it.
	waitJournal(t, vmMonitorUnit, "Skipped due to 'exec-condition'")
	if got := memoryHigh(t, "compute-postgres.service"); got != "infinity" {
		t.Errorf("MemoryHigh of compute-postgres after the vm-monitor went: %s, want infinity", got)
	}
	if code, b := call(t, "POST", "/terminate", adminToken(t), nil); code != 200 {
		t.Errorf("/terminate: %d %s", code, b)
	}
}

// testMemoryPressure points the vm-monitor at a unit the test allocates memory in and
// drives the agent's flows against real cgroup statistics: an upscale request under
// pressure, a downscale denied while the memory is held and approved once it is freed,
// MemoryHigh= through systemd at each step.
func testMemoryPressure(t *testing.T, dropIn string) {
	const hold = 800 * mib
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Type=notify: systemd-run returns once the hog holds the memory.
	run(t, "/usr/bin/systemd-run", "--unit="+hogUnit, "--property=Type=notify", "--setenv="+hogEnv+"="+strconv.Itoa(hold), self)
	if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dropIn, []byte("[Service]\nEnvironment=COMPUTE_VM_MONITOR_CGROUP_UNIT="+hogUnit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shipped polkit rule lets the vm-monitor's user change compute-postgres.service
	// only: a rule of the test's own (polkitd reloads its rules when a file changes)
	// grants it the hog's unit, as an operator who points the vm-monitor elsewhere would.
	rule := "/etc/polkit-1/rules.d/10-vmmon-test.rules"
	if err := os.MkdirAll(filepath.Dir(rule), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rule, []byte(`polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.systemd1.manage-units" && subject.user == "compute-vm-monitor" &&
        action.lookup("unit") == "`+hogUnit+`" && action.lookup("verb") == "set-property") {
        return polkit.Result.YES;
    }
    return polkit.Result.NOT_HANDLED;
});
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(rule) })
	// polkitd has read it once the vm-monitor's user may change the hog's unit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := runMayFail("/usr/sbin/runuser", "-u", "compute-vm-monitor", "--", "/bin/systemctl", "--no-ask-password", "set-property", "--runtime", hogUnit, "MemoryHigh=infinity")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("polkitd did not take the test's rule for %s: %v", hogUnit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	run(t, "/bin/systemctl", "daemon-reload")
	run(t, "/bin/systemctl", "restart", vmMonitorUnit)
	waitUnitActive(t, vmMonitorUnit, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	agent, err := agenttest.Dial(ctx, vmMonitorURL, agenttest.Options{})
	if err != nil {
		t.Fatalf("agent: %v\njournal:\n%s", err, journal(t, vmMonitorUnit))
	}
	defer agent.Close()
	// 1 GiB granted: the threshold at 0.85 of the usable 924 MiB (785.4 MiB), below the
	// 800 MiB the hog holds: the vm-monitor asks for more. The limit stays at the
	// container's MemTotal, set when the agent connected: an upscale never lowers it (on
	// a VM a grant is above MemTotal; here MemTotal is the host's).
	if err := agent.NotifyUpscale(ctx, 0.25, 1024*mib); err != nil {
		t.Fatalf("upscale notification: %v", err)
	}
	if got, want := memoryHigh(t, hogUnit), strconv.FormatUint(memTotal(t), 10); got != want {
		t.Errorf("MemoryHigh of %s after 1 GiB granted: %s, want MemTotal %s", hogUnit, got, want)
	}
	select {
	case id := <-agent.UpscaleRequests():
		t.Logf("upscale request %d", id)
	case <-time.After(15 * time.Second):
		t.Fatalf("no upscale request while %d MiB are held\njournal:\n%s", hold/mib, journal(t, vmMonitorUnit))
	}
	// Down to 768 MiB (usable 668, threshold 567.8 MiB) while 800 MiB are held: denied.
	ok, status, err := agent.RequestDownscale(ctx, 0.25, 768*mib)
	if ok || err != nil || !strings.HasPrefix(status, "calculated memory threshold too low: 567.8 MiB (new threshold) < ") {
		t.Fatalf("downscale while the memory is held: %v %q %v", ok, status, err)
	}
	// Freed: approved once the average (the last 5 samples, 500 ms) has fallen.
	run(t, "/bin/systemctl", "kill", "--kill-whom=main", "--signal=SIGUSR1", hogUnit)
	deadline = time.Now().Add(15 * time.Second)
	for {
		ok, status, err = agent.RequestDownscale(ctx, 0.25, 768*mib)
		if err != nil {
			t.Fatalf("downscale after the memory was freed: %v", err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("downscale still denied 15 s after the memory was freed: %q", status)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(status, "set cgroup memory threshold from 785.4 MiB to 567.8 MiB, of new total 668 MiB") {
		t.Errorf("approved downscale: %q", status)
	}
	if got := memoryHigh(t, hogUnit); got != strconv.Itoa(668*mib) {
		t.Errorf("MemoryHigh of %s after the downscale: %s, want %d", hogUnit, got, 668*mib)
	}
	run(t, "/bin/systemctl", "stop", hogUnit)
	// Back to watching compute-postgres for the rest of the test.
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	run(t, "/bin/systemctl", "daemon-reload")
	run(t, "/bin/systemctl", "restart", vmMonitorUnit)
}
