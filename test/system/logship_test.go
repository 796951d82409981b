package system

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syslogReceiver collects the lines sent to a TCP listener on loopback (the collector of
// logs_export_host).
type syslogReceiver struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
}

func newSyslogReceiver(t *testing.T) *syslogReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				sc.Buffer(make([]byte, 64<<10), 1<<20)
				for sc.Scan() {
					r.mu.Lock()
					r.lines = append(r.lines, sc.Text())
					r.mu.Unlock()
				}
			}()
		}
	}()
	return r
}

// wait returns the first line that matches re, within 30 s.
func (r *syslogReceiver) wait(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, l := range r.lines {
			if re.MatchString(l) {
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("no line matching %s arrived; received:\n%s\ncompute-rsyslog's journal:\n%s", re, strings.Join(r.lines, "\n"),
		journal(t, "compute-rsyslog.service"))
	return ""
}

func (r *syslogReceiver) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func unitState(t *testing.T, unit string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "ActiveState", unit))
}

// TestLogShipping: with logs_export_host, compute-init (as postgres) renders
// compute-rsyslog.service's configuration and restarts the unit through systemd (the
// polkit rule) before Postgres starts; Postgres's syslog lines reach a collector on
// loopback through the journal, in RFC 5424 with the priority of their level, and only
// those (not the stderr copy); /metrics has compute_audit_log_dir_size. A /configure
// without the field stops the unit; a malformed value is an error line and the compute
// runs on.
func TestLogShipping(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/rsyslogd"); err != nil {
		t.Skip("rsyslog is not installed in the container")
	}
	out, err := runMayFail("/usr/bin/systemd-analyze", "verify", "--man=no", "compute-rsyslog.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify compute-rsyslog.service: %v\n%s", err, out)
	}
	recv := newSyslogReceiver(t)
	sp := defaultSpec()
	sp["logs_export_host"] = recv.ln.Addr().String()
	writeConfig(t, sp)
	defer writeConfig(t, defaultSpec())
	restart(t)
	if s := waitStatus(t, "running", "failed"); s.Status != "running" {
		t.Fatalf("status %s: %s\n%s", s.Status, deref(s.Error), journal(t, "compute-init.service"))
	}
	if st := unitState(t, "compute-rsyslog.service"); st != "active" {
		t.Fatalf("compute-rsyslog.service is %s\n%s\n%s", st, journal(t, "compute-rsyslog.service"), journal(t, "compute-init.service"))
	}
	pid := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-P", "MainPID", "compute-rsyslog.service"))
	if u := strings.TrimSpace(run(t, "/usr/bin/stat", "-c", "%U", "/proc/"+pid)); u != "postgres" {
		t.Errorf("rsyslogd runs as %q, want postgres", u)
	}
	// Postgres's start (after the shipping: compute-init restarted it first), with
	// facility local0 and the level's severity: LOG is info (<134>).
	pg := `^<(\d+)>1 \S+ \S+ postgres \d+ - - `
	recv.wait(t, regexp.MustCompile(pg+`.*database system is ready to accept connections`))
	// A FATAL line: local0.err (<131>).
	if c, err := login(t, "alice", "not-her-password", "appdb"); err == nil {
		c.Close(t.Context())
		t.Fatal("a wrong password logged in")
	}
	recv.wait(t, regexp.MustCompile(`^<131>1 \S+ \S+ postgres \d+ - - .*FATAL: +password authentication failed for user "alice"`))
	// Only Postgres's syslog copies (each carries syslog's [N-M] sequence), no stderr copy,
	// no other unit.
	seq := regexp.MustCompile(pg + ` ?\[\d+-\d+\] `)
	for _, l := range recv.all() {
		if !seq.MatchString(l) {
			t.Errorf("a line that is not Postgres's syslog line: %q", l)
		}
	}
	code, b := call(t, "GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(string(b), "\ncompute_audit_log_dir_size 0\n") {
		t.Errorf("/metrics: %d, no compute_audit_log_dir_size 0", code)
	}

	// A malformed logs_export_host: an error line, the compute runs, the shipping is
	// stopped (nothing valid is left to ship).
	bad := defaultSpec()
	bad["logs_export_host"] = "collector-without-port"
	body, _ := json.Marshal(map[string]any{"spec": bad, "compute_ctl_config": map[string]any{"jwks": jwks}})
	if code, b := call(t, "POST", "/configure", computeToken(t), body); code != 200 {
		t.Fatalf("/configure with a malformed logs_export_host: %d %s", code, b)
	}
	// The step ships in the background and waits for it before it exits (after running).
	const malformed = "Postgres logs are not exported: logs_export_host is malformed"
	deadline := time.Now().Add(30 * time.Second)
	for (unitState(t, "compute-rsyslog.service") != "inactive" || !strings.Contains(journal(t, "compute-configure.service"), malformed)) &&
		time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if st := unitState(t, "compute-rsyslog.service"); st != "inactive" {
		t.Errorf("compute-rsyslog.service is %s after a spec that ships nothing", st)
	}
	if j := journal(t, "compute-configure.service"); !strings.Contains(j, malformed) {
		t.Errorf("compute-configure's journal lacks the malformed logs_export_host:\n%s", j)
	}
	if s := status(t); s.Status != "running" {
		t.Errorf("status %s after a malformed logs_export_host", s.Status)
	}
	if _, err := os.Stat("/run/compute/rsyslog.conf"); err == nil {
		t.Error("/run/compute/rsyslog.conf is left behind")
	}
}
