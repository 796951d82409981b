// Package bustest starts private dbus-daemons for tests: a session-like bus without
// policy, and a bus configured like this machine's system bus with an extra policy
// directory. Tests skip when dbus-daemon is not installed.
package bustest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
)

// SystemConf is the system bus configuration StartSystemLike copies.
const SystemConf = "/usr/share/dbus-1/system.conf"

// readyTimeout bounds the wait for a daemon's socket; it only turns a hang into a failure.
const readyTimeout = 15 * time.Second

// StartSession starts `dbus-daemon --session` on a socket in a temporary directory and
// returns its address. The daemon is killed when the test ends.
func StartSession(t testing.TB) string {
	t.Helper()
	bin := lookDaemon(t)
	sock := filepath.Join(t.TempDir(), "bus")
	addr := "unix:path=" + sock
	start(t, sock, execx.Cmd{Path: bin, Args: []string{"--session", "--nofork", "--nopidfile", "--address=" + addr}})
	return addr
}

// StartSystemLike starts a dbus-daemon with a copy of the system bus configuration: same
// default policy, but listening on a temporary socket, without fork, pid file, syslog,
// user switch or service activation, and with includeDir as its only policy directory.
// The socket and its directory are made reachable by every user. Needs root.
func StartSystemLike(t testing.TB, includeDir string) string {
	t.Helper()
	bin := lookDaemon(t)
	if os.Geteuid() != 0 {
		t.Skip("a system-like dbus-daemon needs root")
	}
	raw, err := os.ReadFile(SystemConf)
	if err != nil {
		t.Skipf("no system bus configuration to copy: %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "system_bus_socket")
	conf, err := SystemLikeConfig(string(raw), sock, includeDir)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "system.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Other users must reach the socket: open the directory and its parent.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	start(t, sock, execx.Cmd{Path: bin, Args: []string{"--config-file=" + confPath, "--nofork", "--nopidfile"}})
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	return "unix:path=" + sock
}

var (
	reListen = regexp.MustCompile(`(?s)<listen>.*?</listen>`)
	reDrop   = []*regexp.Regexp{
		regexp.MustCompile(`(?s)<user>.*?</user>`),
		regexp.MustCompile(`<fork\s*/>`),
		regexp.MustCompile(`<syslog\s*/>`),
		regexp.MustCompile(`(?s)<pidfile>.*?</pidfile>`),
		regexp.MustCompile(`(?s)<servicehelper>.*?</servicehelper>`),
		regexp.MustCompile(`<standard_system_servicedirs\s*/>`),
		regexp.MustCompile(`(?s)<includedir>.*?</includedir>`),
		regexp.MustCompile(`(?s)<include\b[^>]*>.*?</include>`),
	}
)

// SystemLikeConfig rewrites a system.conf as StartSystemLike describes.
func SystemLikeConfig(conf, sock, includeDir string) (string, error) {
	if !reListen.MatchString(conf) || !strings.Contains(conf, "</busconfig>") {
		return "", fmt.Errorf("system bus configuration has no <listen> or </busconfig>")
	}
	conf = reListen.ReplaceAllLiteralString(conf, "<listen>unix:path="+sock+"</listen>")
	for _, re := range reDrop {
		conf = re.ReplaceAllLiteralString(conf, "")
	}
	i := strings.LastIndex(conf, "</busconfig>")
	return conf[:i] + "  <includedir>" + includeDir + "</includedir>\n" + conf[i:], nil
}

func lookDaemon(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed; skipping D-Bus test")
	}
	return bin
}

// start runs the daemon until the test ends and waits until sock accepts connections.
func start(t testing.TB, sock string, cmd execx.Cmd) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := execx.Run(ctx, cmd)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case err := <-done:
			done <- err // let the cleanup receive it
			t.Fatalf("dbus-daemon exited early: %v", err)
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dbus-daemon socket %s not ready after %s", sock, readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
