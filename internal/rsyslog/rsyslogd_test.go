package rsyslog_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/rsyslog"
)

const rsyslogd = "/usr/sbin/rsyslogd"

// daemon runs rsyslogd in the foreground, unprivileged (as postgres when the test runs as
// root), with the configuration in conf; it is killed when the test ends.
func daemon(t *testing.T, dir, name, conf string) *execx.Process {
	t.Helper()
	path := filepath.Join(dir, name+".conf")
	write(t, path, conf)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := execx.Start(ctx, execx.Cmd{Path: rsyslogd, Args: []string{"-n", "-iNONE", "-f", path}, User: pgtest.OSUser, Dir: dir})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, p.Stdout()) }()
	t.Cleanup(func() {
		cancel()
		_, _ = p.Wait()
	})
	return p
}

// write creates a file the unprivileged rsyslogd can read.
func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	uid, gid := pgtest.OSUserIDs(t)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	uid, gid := pgtest.OSUserIDs(t)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// waitFile waits until path exists and has content, and returns it.
func waitFile(t *testing.T, path string, p *execx.Process, what string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not appear; rsyslogd said: %s", what, path, p.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShipping runs the rendered configuration in a real rsyslogd and a second rsyslogd
// as the receiver on a loopback port: a pgauditlogtofile-like file's records arrive as
// RFC 5424 lines whose message is JSON with the endpoint and project ids, and a Postgres
// syslog line (the form Postgres's syslog(3) sends; the socket input stands for the
// journal, which this host may not have) arrives in RFC 5424 with its priority, tag and
// pid; a line of another program does not.
func TestShipping(t *testing.T) {
	if _, err := os.Stat(rsyslogd); err != nil {
		t.Skipf("%s not installed (Debian package rsyslog): %v", rsyslogd, err)
	}
	dir := pgtest.OwnedDir(t, "rsl")
	for _, d := range []string{"recv", "send", "log"} {
		mkdir(t, filepath.Join(dir, d))
	}
	received := filepath.Join(dir, "received.log")
	portFile := filepath.Join(dir, "recv.port")
	recv := daemon(t, dir, "receiver", `global(workDirectory="`+dir+`/recv")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="recv") { action(type="omfile" file="`+received+`" template="raw") }
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="`+portFile+`" ruleset="recv")
`)
	port, err := strconv.Atoi(strings.TrimSpace(waitFile(t, portFile, recv, "receiver")))
	if err != nil {
		t.Fatalf("receiver port: %v", err)
	}
	target, err := rsyslog.ParseTarget("127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "pg.sock")
	conf, err := rsyslog.Render(rsyslog.Config{
		WorkDir:  filepath.Join(dir, "send"),
		Audit:    &rsyslog.Audit{LogDir: filepath.Join(dir, "log"), Target: target, EndpointID: "ep-test-123", ProjectID: "proj-456"},
		Postgres: &rsyslog.Postgres{Target: target, Socket: sock},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The unit checks the configuration first: it must pass.
	write(t, filepath.Join(dir, "check.conf"), conf)
	if _, err := execx.Run(context.Background(), execx.Cmd{Path: rsyslogd, Args: []string{"-N1", "-f", filepath.Join(dir, "check.conf")}, User: pgtest.OSUser}); err != nil {
		t.Fatalf("rsyslogd -N1 refuses the rendered configuration: %v\n%s", err, conf)
	}
	send := daemon(t, dir, "sender", conf)
	// Two pgauditlogtofile records, the first of two lines; the second is the file's last
	// (sent after readTimeout).
	write(t, filepath.Join(dir, "log", "audit-20261206_1100.log"),
		"2026-12-06 11:00:00.123 GMT,\"cloud_admin\",\"postgres\",4242,AUDIT: SESSION,1,1,DDL,CREATE TABLE,,,\"create table t(\n  a int)\",<not logged>\n"+
			"2026-12-06 11:00:01.456 GMT,\"cloud_admin\",\"postgres\",4242,AUDIT: SESSION,2,1,WRITE,INSERT,,,\"insert into t values (1)\",<not logged>\n")
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(sock); err != nil; _, err = os.Stat(sock) {
		if time.Now().After(deadline) {
			t.Fatalf("the sender's socket did not appear: %v; rsyslogd said: %s", err, send.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := net.Dial("unixgram", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{
		"<134>Dec  6 11:00:02 postgres[4242]: [3-1] 2026-12-06 11:00:02.789 UTC [4242] LOG:  database system is ready to accept connections",
		"<134>Dec  6 11:00:02 other[7]: not from postgres",
	} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}

	auditRe := regexp.MustCompile(`^<174>1 \S+ \S+ - - - - (\{.*\})$`)
	pgRe := regexp.MustCompile(`^<134>1 \S+ \S+ postgres 4242 - - (.*)$`)
	var audits []map[string]string
	var pgLine string
	deadline = time.Now().Add(30 * time.Second)
	for len(audits) < 2 || pgLine == "" {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(received)
			t.Fatalf("not everything arrived within 30 s: %d audit records, postgres line %q; received:\n%s\nsender said: %s\nreceiver said: %s\nconfiguration:\n%s",
				len(audits), pgLine, b, send.Stderr(), recv.Stderr(), conf)
		}
		time.Sleep(50 * time.Millisecond)
		b, _ := os.ReadFile(received)
		audits, pgLine = nil, ""
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if m := auditRe.FindStringSubmatch(l); m != nil {
				var v map[string]string
				if err := json.Unmarshal([]byte(m[1]), &v); err != nil {
					t.Fatalf("audit line %q: the message is not JSON: %v", l, err)
				}
				audits = append(audits, v)
			} else if m := pgRe.FindStringSubmatch(l); m != nil {
				pgLine = m[1]
			} else if l != "" {
				t.Errorf("unexpected line: %q", l)
			}
		}
	}
	b, _ := os.ReadFile(received)
	t.Logf("received:\n%s", b)
	for i, want := range []string{"CREATE TABLE", "insert into t values (1)"} {
		a := audits[i]
		if a["endpoint_id"] != "ep-test-123" || a["project_id"] != "proj-456" || !strings.Contains(a["msg"], want) {
			t.Errorf("audit record %d = %v, want the ids and %q", i, a, want)
		}
	}
	if !strings.Contains(audits[0]["msg"], "a int)") {
		t.Errorf("the first record's continuation line is not in it: %q", audits[0]["msg"])
	}
	if !strings.Contains(pgLine, "database system is ready to accept connections") {
		t.Errorf("postgres line = %q", pgLine)
	}
	// When it stops, imfile writes its position in the audit file into the work
	// directory under the name the caller removes after a new PGDATA.
	if err := syscall.Kill(send.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dir, "send", rsyslog.ImfileStatePattern))
		if len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			all, _ := filepath.Glob(filepath.Join(dir, "send", "*"))
			t.Fatalf("no imfile state file matching %s after the stop; the work directory holds %v", rsyslog.ImfileStatePattern, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCheckedByRsyslogd: the configurations production renders (the journal input, plain
// and TLS audit) pass rsyslogd's own check, which compute-rsyslog.service runs first.
func TestCheckedByRsyslogd(t *testing.T) {
	if _, err := os.Stat(rsyslogd); err != nil {
		t.Skipf("%s not installed (Debian package rsyslog): %v", rsyslogd, err)
	}
	dir := pgtest.OwnedDir(t, "rsn")
	for _, tls := range []bool{false, true} {
		conf, err := rsyslog.Render(rsyslog.Config{WorkDir: dir,
			Audit: &rsyslog.Audit{LogDir: filepath.Join(dir, "log"), Target: rsyslog.Target{Host: "collector.example", Port: 6514}, TLS: tls,
				CAFile: "/etc/ssl/certs/ca-certificates.crt", EndpointID: "ep-cool-darkness-123456", ProjectID: "cool-darkness-123456"},
			Postgres: &rsyslog.Postgres{Target: rsyslog.Target{Host: "::1", Port: 514}, Unit: "compute-postgres.service"}})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "check.conf")
		write(t, path, conf)
		if res, err := execx.Run(context.Background(), execx.Cmd{Path: rsyslogd, Args: []string{"-N1", "-f", path}, User: pgtest.OSUser}); err != nil {
			t.Errorf("TLS %v: rsyslogd -N1: %v\n%s\n%s", tls, err, res.Stderr, conf)
		}
	}
}
