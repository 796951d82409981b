package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/computetools/compute-tools/internal/tcpowner"
)

// postEnv makes the test binary an HTTP client: it POSTs an empty JSON object to the URL
// and prints the status code and the body.
const postEnv = "APISERVER_TEST_POST"

func TestMain(m *testing.M) {
	if url := os.Getenv(postEnv); url != "" {
		os.Exit(post(url))
	}
	os.Exit(m.Run())
}

func post(url string) int {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(url, "application/json", strings.NewReader("{}"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
	return 0
}

// postAs POSTs to url from a process of user who (root runs it as that user).
func postAs(t *testing.T, who, url string) string {
	t.Helper()
	bin := execxtest.SelfForOthers(t)
	res, err := execx.Run(context.Background(), execx.Cmd{Path: bin, User: who, Env: []string{postEnv + "=" + url}})
	if err != nil {
		t.Fatalf("client as %s: %v", who, err)
	}
	return string(res.Stdout)
}

// TestInternalPortServesOnlyAllowedUsers: a real request from a process running as
// nobody to the internal port is refused with 403 (and a log line without secrets); the
// same request from root is served; with nobody in the list, nobody is served and root
// refused.
func TestInternalPortServesOnlyAllowedUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as nobody")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip(err)
	}
	var logs bytes.Buffer
	cfg := testConfig(t)
	r := startWith(t, cfg, func(d *Deps, _ *statetest.Waker) { d.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	got := postAs(t, "nobody", r.int+"/grants")
	if !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "INTERNAL_HTTP_ADMIN_USERS") {
		t.Errorf("POST /grants as nobody: %q, want 403", got)
	}
	nobody, _ := user.Lookup("nobody")
	if l := logs.String(); !strings.Contains(l, "internal port: request refused") || !strings.Contains(l, "uid "+nobody.Uid+":") || !strings.Contains(l, "path=/grants") {
		t.Errorf("no log line for the refusal:\n%s", l)
	}
	if got := postAs(t, "nobody", r.int+"/extension_server/x.tar.zst"); !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "INTERNAL_HTTP_USERS") {
		t.Errorf("POST /extension_server as nobody: %q, want 403", got)
	}
	// postgres (every backend, so SQL that can make HTTP requests) may ask for extension
	// files, not act as the admin role.
	if _, err := user.Lookup("postgres"); err == nil {
		for _, path := range []string{"/grants", "/extensions"} {
			if got := postAs(t, "postgres", r.int+path); !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "INTERNAL_HTTP_ADMIN_USERS") {
				t.Errorf("POST %s as postgres: %q, want 403", path, got)
			}
		}
		if got := postAs(t, "postgres", r.int+"/extension_server/x.tar.zst"); strings.HasPrefix(got, "403 ") || got == "" {
			t.Errorf("POST /extension_server as postgres: %q, want the route's answer", got)
		}
	}
	// root (this process, and a helper as root) is served: the route answers, whatever it
	// says about the empty body.
	resp, err := http.Post(r.int+"/grants", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusForbidden {
		t.Errorf("POST /grants as root: 403")
	}
	if got := postAs(t, "root", r.int+"/grants"); strings.HasPrefix(got, "403 ") {
		t.Errorf("POST /grants from a root process: %q", got)
	}
	// The external port is not guarded this way (it has JWT auth).
	if got := postAs(t, "nobody", r.ext+"/terminate"); strings.Contains(got, "INTERNAL_HTTP_USERS") {
		t.Errorf("POST /terminate on the external port as nobody: %q, want the token check's answer", got)
	}

	// Other lists: who is refused follows the setting.
	// refused maps "user path" to the expected refusal.
	for _, c := range []struct {
		users, admins []string
		refused       map[string]bool
	}{
		{[]string{"nobody"}, nil, map[string]bool{"nobody /extension_server/x": false, "root /extension_server/x": true, "nobody /grants": true, "root /grants": false}},
		{nil, []string{"nobody"}, map[string]bool{"nobody /extension_server/x": true, "root /extension_server/x": false, "nobody /grants": false, "root /grants": true, "nobody /extensions": false}},
		{[]string{"*"}, nil, map[string]bool{"nobody /extension_server/x": false, "nobody /grants": true}},
		{nil, []string{"*"}, map[string]bool{"nobody /extension_server/x": true, "nobody /grants": false}},
	} {
		cfg := testConfig(t)
		cfg.InternalUsers, cfg.InternalAdminUsers = c.users, c.admins
		r := start(t, cfg)
		for k, refused := range c.refused {
			who, path, _ := strings.Cut(k, " ")
			if got := postAs(t, who, r.int+path); strings.HasPrefix(got, "403 ") != refused {
				t.Errorf("INTERNAL_HTTP_USERS=%v INTERNAL_HTTP_ADMIN_USERS=%v: POST %s as %s: %q, refused: want %v", c.users, c.admins, path, who, got, refused)
			}
		}
	}
}

// fakeConn has only addresses.
type fakeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c fakeConn) LocalAddr() net.Addr  { return c.local }
func (c fakeConn) RemoteAddr() net.Addr { return c.remote }

// TestPeerGuardVerdicts: the decisions for what the kernel may answer.
func TestPeerGuardVerdicts(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	const hostAddr = "10.1.2.3"
	for _, c := range []struct {
		name          string
		local, remote string
		uid           uint32
		err           error
		ok            bool
	}{
		{"allowed user", "127.0.0.1:3081", "127.0.0.1:40000", 0, nil, true},
		{"other user", "127.0.0.1:3081", "127.0.0.1:40000", 65534, nil, false},
		{"closed before the lookup", "127.0.0.1:3081", "127.0.0.1:40000", 0, tcpowner.ErrOrphaned, false},
		{"loopback, no socket", "127.0.0.1:3081", "127.0.0.1:40000", 0, tcpowner.ErrNotFound, false},
		{"IPv6 loopback, no socket", "[::1]:3081", "[::1]:40000", 0, tcpowner.ErrNotFound, false},
		{"own address, no socket", "10.9.9.9:3081", "10.9.9.9:40000", 0, tcpowner.ErrNotFound, false},
		{"another address of this host, no socket", "0.0.0.0:3081", hostAddr + ":40000", 0, tcpowner.ErrNotFound, false},
		{"another host", "10.9.9.9:3081", "192.0.2.7:40000", 0, tcpowner.ErrNotFound, true},
		{"another host, mapped", "[::ffff:10.9.9.9]:3081", "[::ffff:192.0.2.7]:40000", 0, tcpowner.ErrNotFound, true},
		{"lookup failed", "10.9.9.9:3081", "192.0.2.7:40000", 0, fmt.Errorf("sock_diag: boom"), false},
	} {
		g := &peerGuard{users: map[uint32]string{0: "root"}, admins: map[uint32]string{0: "root"},
			lookup:    func(netip.AddrPort, netip.AddrPort) (uint32, error) { return c.uid, c.err },
			localAddr: func(a netip.Addr) bool { return a.Unmap() == netip.MustParseAddr(hostAddr) }}
		pc := &peerCheck{conn: fakeConn{local: tcp(c.local), remote: tcp(c.remote)}}
		g.check(pc)
		for _, admin := range []bool{false, true} {
			if err := g.verdict(pc, admin); (err == nil) != c.ok {
				t.Errorf("%s (admin route %v): %v, want ok %v", c.name, admin, err, c.ok)
			}
		}
	}
}
