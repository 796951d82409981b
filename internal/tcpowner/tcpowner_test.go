package tcpowner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"
)

// helperEnv makes the test binary a client (see client): "hold" keeps the connection
// until the server closes it, "close" closes it at once.
const (
	helperEnv = "TCPOWNER_TEST_CLIENT"
	addrEnv   = "TCPOWNER_TEST_ADDR"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(client(mode, os.Getenv(addrEnv)))
	}
	os.Exit(m.Run())
}

// client connects to addr, prints its local address and holds or closes the connection.
func client(mode, addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(c.LocalAddr().String())
	if mode == "close" {
		c.Close()
		return 0
	}
	_, _ = io.Copy(io.Discard, c)
	return 0
}

// asUser needs root (to run a helper as another user) and that user.
func asUser(t *testing.T, name string) uint32 {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("no user %s: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(uid)
}

// connectAs runs the helper as who against ln and returns the server's end.
func connectAs(t *testing.T, bin string, ln net.Listener, who, mode string) (net.Conn, *execx.Process) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := execx.Start(ctx, execx.Cmd{Path: bin, User: who, Env: []string{helperEnv + "=" + mode, addrEnv + "=" + ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(p.Stdout()).ReadString('\n')
	if err != nil {
		_, werr := p.Wait()
		t.Fatalf("client as %s: %q %v %v", who, line, err, werr)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if got := c.RemoteAddr().String(); got != strings.TrimSpace(line) {
		t.Fatalf("accepted %s, the client is %s", got, strings.TrimSpace(line))
	}
	return c, p
}

func addrs(t *testing.T, c net.Conn) (local, remote netip.AddrPort) {
	t.Helper()
	l, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	return l, r
}

// TestPeerUID: the owner of a real client's socket, as nobody and as root, over IPv4 and
// IPv6 loopback and a dual-stack listener (IPv4-mapped addresses), by netlink and by the
// /proc fallback.
func TestPeerUID(t *testing.T) {
	nobody := asUser(t, "nobody")
	bin := execxtest.SelfForOthers(t)
	for _, network := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}, {"tcp", "[::]:0"}} {
		ln, err := net.Listen(network.net, network.addr)
		if err != nil {
			t.Logf("%s %s: %v", network.net, network.addr, err)
			continue
		}
		defer ln.Close()
		if network.addr == "[::]:0" {
			// Dial the dual-stack listener over IPv4: the server sees ::ffff:127.0.0.1.
			port := ln.Addr().(*net.TCPAddr).Port
			ln = &addrOverride{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
		}
		for _, who := range []struct {
			name string
			uid  uint32
		}{{"nobody", nobody}, {"root", 0}} {
			c, p := connectAs(t, bin, ln, who.name, "hold")
			local, remote := addrs(t, c)
			got, err := PeerUID(local, remote)
			if err != nil || got != who.uid {
				t.Errorf("%s: PeerUID(%s, %s) = %d, %v; want %d (%s)", network.addr, local, remote, got, err, who.uid, who.name)
			}
			if local.Addr().Is4() {
				// As a dual-stack listener's connection shows it (net.TCPAddr.AddrPort).
				m := func(a netip.AddrPort) netip.AddrPort {
					return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
				}
				if got, err := PeerUID(m(local), m(remote)); err != nil || got != who.uid {
					t.Errorf("%s: PeerUID(%s, %s) = %d, %v; want %d (%s)", network.addr, m(local), m(remote), got, err, who.uid, who.name)
				}
			}
			var fromProc uint32
			for _, q := range queries(local, remote) {
				if fromProc, err = procLookup(q); !errors.Is(err, ErrNotFound) {
					break
				}
			}
			if err != nil || fromProc != who.uid {
				t.Errorf("%s: /proc lookup of %s = %d, %v; want %d (%s)", network.addr, remote, fromProc, err, who.uid, who.name)
			}
			c.Close()
			if _, err := p.Wait(); err != nil {
				t.Errorf("client: %v", err)
			}
		}
	}
}

type addrOverride struct {
	net.Listener
	addr net.Addr
}

func (a *addrOverride) Addr() net.Addr { return a.addr }

// TestPeerUIDOfAClosedClient: a client that closed its socket before the server looked
// (the kernel then reports uid 0 for its FIN_WAIT/TIME_WAIT entry) is never taken for
// root.
func TestPeerUIDOfAClosedClient(t *testing.T) {
	asUser(t, "nobody")
	bin := execxtest.SelfForOthers(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, p := connectAs(t, bin, ln, "nobody", "close")
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	local, remote := addrs(t, c)
	if uid, err := PeerUID(local, remote); err == nil {
		t.Errorf("PeerUID of a closed client = %d, want an error", uid)
	} else if !errors.Is(err, ErrOrphaned) && !errors.Is(err, ErrNotFound) {
		t.Errorf("PeerUID of a closed client: %v", err)
	}
	if uid, err := procLookup(queries(local, remote)[0]); err == nil {
		t.Errorf("/proc lookup of a closed client = %d, want an error", uid)
	}
}

// TestPeerUIDOfAnotherHost: an address no local socket has is ErrNotFound.
func TestPeerUIDOfAnotherHost(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	local, _ := netip.ParseAddrPort(ln.Addr().String())
	remote := netip.MustParseAddrPort("192.0.2.7:40000")
	if uid, err := PeerUID(local, remote); !errors.Is(err, ErrNotFound) {
		t.Errorf("PeerUID of %s = %d, %v; want ErrNotFound", remote, uid, err)
	}
	if uid, err := procLookup(queries(local, remote)[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("/proc lookup of %s = %d, %v; want ErrNotFound", remote, uid, err)
	}
	// The listener itself matches the port but is no peer.
	if uid, err := PeerUID(netip.MustParseAddrPort("127.0.0.1:1"), local); !errors.Is(err, ErrNotFound) {
		t.Errorf("PeerUID with the listener's address = %d, %v; want ErrNotFound", uid, err)
	}
}

// BenchmarkPeerUID reports the cost of one lookup by netlink and by /proc.
func BenchmarkPeerUID(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	c, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	b.Run("netlink", func(b *testing.B) {
		for b.Loop() {
			if _, err := diagLookup(queries(local, remote)[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc", func(b *testing.B) {
		for b.Loop() {
			if _, err := procLookup(queries(local, remote)[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
