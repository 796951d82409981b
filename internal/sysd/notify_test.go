package sysd

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenNotify binds a unixgram socket at addr (a path, or "@name" for the abstract
// namespace) and points NOTIFY_SOCKET at it.
func listenNotify(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return c
}

// readUntilMark returns the datagrams received before the "MARK=1" datagram.
func readUntilMark(t *testing.T, c *net.UnixConn) []string {
	t.Helper()
	if err := Notify("MARK=1"); err != nil {
		t.Fatalf("notify mark: %v", err)
	}
	var got []string
	buf := make([]byte, 4096)
	for {
		// The deadline only turns a lost datagram into a failure instead of a hang.
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v (got so far %q)", err, got)
		}
		if s := string(buf[:n]); s != "MARK=1" {
			got = append(got, s)
			continue
		}
		return got
	}
}

func TestNotifyDatagrams(t *testing.T) {
	tests := []struct {
		name string
		send func() error
		want []string
	}{
		{"ready", func() error { return Ready("") }, []string{"READY=1"}},
		{"ready with status", func() error { return Ready("running") }, []string{"READY=1\nSTATUS=running"}},
		{"status", func() error { return Status("configuration") }, []string{"STATUS=configuration"}},
		{"status newline flattened", func() error { return Status("failed:\nno spec") }, []string{"STATUS=failed: no spec"}},
		{"stopping", Stopping, []string{"STOPPING=1"}},
		{"watchdog", Watchdog, []string{"WATCHDOG=1"}},
		{"several lines in one datagram", func() error { return Notify("READY=1", "STATUS=x", "MAINPID=42") }, []string{"READY=1\nSTATUS=x\nMAINPID=42"}},
		{"nothing to send", func() error { return Notify() }, nil},
	}
	sockets := map[string]func(t *testing.T) string{
		"path":     func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") },
		"abstract": func(t *testing.T) string { return "@compute-sysd-test-" + strconv.Itoa(os.Getpid()) },
	}
	for kind, addr := range sockets {
		t.Run(kind, func(t *testing.T) {
			c := listenNotify(t, addr(t))
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if err := tt.send(); err != nil {
						t.Fatalf("send: %v", err)
					}
					got := readUntilMark(t, c)
					if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
						t.Errorf("datagrams = %q, want %q", got, tt.want)
					}
				})
			}
		})
	}
}

func TestNotifyWithoutSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for name, f := range map[string]func() error{
		"ready": func() error { return Ready("x") }, "status": func() error { return Status("x") },
		"stopping": Stopping, "watchdog": Watchdog,
	} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v, want nil", name, err)
		}
	}
}

func TestNotifyUnreachableSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing"))
	err := Ready("")
	if err == nil {
		t.Fatal("Ready to a missing socket succeeded")
	}
	if !strings.HasPrefix(err.Error(), "sd_notify: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error = %v, want sd_notify context wrapping ENOENT", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		name       string
		usec, pid  string
		want       time.Duration
		wantEnable bool
	}{
		{"unset", "", "", 0, false},
		{"usec only", "2000000", "", 2 * time.Second, true},
		{"our pid", "500000", me, 500 * time.Millisecond, true},
		{"another pid", "500000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"not a number", "soon", "", 0, false},
		{"negative", "-5", "", 0, false},
		{"zero", "0", "", 0, false},
		{"bad pid", "500000", "me", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, ok := WatchdogInterval(nil)
			if got != tt.want || ok != tt.wantEnable {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantEnable)
			}
		})
	}
}
