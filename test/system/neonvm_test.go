package system

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeNeonVMHelper is a stand-in for NeonVM's /neonvm/bin helpers: it records its user and
// arguments; resize-swap deletes itself after --once, as the real one does.
const fakeNeonVMHelper = `#!/bin/sh
echo "$(id -un) $(basename "$0") $*" >>/run/neonvm-calls
if [ "$1" = --once ]; then rm -f "$0"; fi
`

// TestNeonVMHelpersAndCores: with COMPUTE_RESIZE_SWAP_ON_BIND and
// COMPUTE_SET_DISK_QUOTA_FOR_FS, compute-init (as postgres) has the helpers run as root
// through their units, allowed by the polkit rule, before Postgres starts; a second start,
// with resize-swap gone (--once), skips it with a log line. Then Postgres's postmaster is
// killed with SIGABRT: the compute fails, and the stop hook reports the core it left in
// PGDATA (a backtrace where gdb is installed, a line saying gdb is not otherwise).
func TestNeonVMHelpersAndCores(t *testing.T) {
	orig, err := os.ReadFile("/etc/default/compute-tools")
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/etc/default/compute-tools", orig, 0o644)
	defer os.RemoveAll("/neonvm")
	defer os.Remove("/var/db/postgres/compute/core") // the core this test makes (standalone PGDATA is kept)
	if err := os.MkdirAll("/neonvm/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"resize-swap", "set-disk-quota"} {
		if err := os.WriteFile("/neonvm/bin/"+h, []byte(fakeNeonVMHelper), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove("/run/neonvm-calls")
	if out, err := runMayFail("/usr/bin/systemd-analyze", "verify", "--man=no", "compute-resize-swap@1073741824.service", "compute-disk-quota@1048576.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	os.WriteFile("/etc/default/compute-tools", append(orig, []byte("\nCOMPUTE_RESIZE_SWAP_ON_BIND=true\nCOMPUTE_SET_DISK_QUOTA_FOR_FS=/var/db\n")...), 0o644)
	sp := defaultSpec()
	sp["swap_size_bytes"] = 1 << 30
	sp["disk_quota_bytes"] = 1 << 30
	writeConfig(t, sp)
	restart(t)
	s := waitStatus(t, "running", "failed")
	if s.Status != "running" {
		t.Fatalf("status %s: %s\n%s", s.Status, deref(s.Error), journal(t, "compute-init.service"))
	}
	calls, _ := os.ReadFile("/run/neonvm-calls")
	for _, want := range []string{"root resize-swap --once 1073741824\n", "root set-disk-quota 1048576 /var/db\n"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("helper calls lack %q:\n%s", want, calls)
		}
	}
	if j := journal(t, "compute-init.service"); !strings.Contains(j, `msg="resized swap"`) || !strings.Contains(j, `msg="set disk quota"`) {
		t.Errorf("compute-init's journal:\n%s", j)
	}
	if j := journal(t, "compute-resize-swap@1073741824.service"); j == "" {
		t.Error("compute-resize-swap@1073741824.service left nothing in the journal")
	}

	// resize-swap deleted itself: the next start skips it, and still sets the quota.
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("second start: %s: %s", s.Status, deref(s.Error))
	}
	if j := journal(t, "compute-init.service"); !strings.Contains(j, "swap not resized: the NeonVM helper is not installed") {
		t.Errorf("second start: compute-init's journal lacks the skip:\n%s", j)
	}
	calls, _ = os.ReadFile("/run/neonvm-calls")
	if n := strings.Count(string(calls), "set-disk-quota"); n != 2 {
		t.Errorf("set-disk-quota ran %d times, want 2:\n%s", n, calls)
	}

	// A crash: SIGABRT to the postmaster (LimitCORE=infinity; the kernel's core_pattern
	// decides where the core goes).
	pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	pid := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-postgres.service"))
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		t.Fatalf("MainPID %q", pid)
	}
	if err := syscall.Kill(n, syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	s = waitStatus(t, "failed")
	if !strings.Contains(deref(s.Error), "core-dump") {
		t.Errorf("error %q does not say Postgres dumped core", deref(s.Error))
	}
	deadline := time.Now().Add(30 * time.Second)
	var j string
	for time.Now().Before(deadline) {
		j = journal(t, "compute-postgres.service")
		if strings.Contains(j, "core dump backtrace") || strings.Contains(j, "no backtrace: gdb is not installed") ||
			strings.Contains(j, "systemd-coredump has it") || strings.Contains(j, "the kernel hands cores elsewhere") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var line string
	for _, l := range strings.Split(j, "\n") {
		if strings.Contains(l, "core") && (strings.Contains(l, "level=WARN") || strings.Contains(l, "dumped")) {
			line += l + "\n"
		}
	}
	t.Logf("core_pattern %q; the stop hook said:\n%s", strings.TrimSpace(string(pattern)), line)
	if line == "" || !strings.Contains(j, "core") {
		t.Errorf("no core report in compute-postgres's journal:\n%s", j)
	}
}
