// Package tcpowner finds the local user that owns the other end of a TCP connection
// made on this host: compute-api uses it to let only some OS users call its internal port
// (the reference trusts every caller there). For a connection whose both ends are on this
// host, the kernel knows the peer's socket, and with it the user that created it: the
// socket diagnostics interface (NETLINK_SOCK_DIAG, inet_diag) answers an exact lookup of
// the peer's 4-tuple with idiag_uid, the socket's owner, as `ss -e` shows it. Where a
// netlink socket cannot be opened (a sandbox without AF_NETLINK), and to confirm a "no
// such socket" (which a kernel without inet_diag answers for every socket), the same is
// read from /proc/self/net/tcp and tcp6, which lists every TCP socket of the network
// namespace (slower: a scan of all of them).
//
// A socket that no longer belongs to a file (its process closed it: an orphaned socket
// in FIN_WAIT or a TIME_WAIT entry) reports uid 0 and inode 0 to both interfaces: its
// owner is unknown, and such a peer is ErrOrphaned, never root. A client that connects,
// sends its request and closes at once is therefore refused, not taken for root.
//
// The owner is the socket's: the user of the process that created it (a socket handed
// to another process keeps its creator). No library: one request and one answer of
// fixed layout over golang.org/x/sys/unix (mdlayher/netlink would add two modules for it).
package tcpowner

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFound: no socket on this host has the peer's address and port (the peer is on
// another host, or its socket is gone).
var ErrNotFound = errors.New("no socket on this host is the other end of the connection")

// ErrOrphaned: the peer's socket exists but no process holds it any more, so its owner
// is unknown.
var ErrOrphaned = errors.New("the other end of the connection was closed: its owner is unknown")

// PeerUID returns the user ID that owns the socket at the other end of a TCP connection
// whose local and remote addresses (as this side sees them: net.Conn's LocalAddr and
// RemoteAddr) are given. IPv4-mapped IPv6 addresses (a dual-stack listener) are looked
// up as IPv4 first, then as they are.
func PeerUID(local, remote netip.AddrPort) (uint32, error) {
	var lastErr error = ErrNotFound
	for _, q := range queries(local, remote) {
		uid, err := lookup(q)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return uid, err
		}
		lastErr = err
	}
	return 0, lastErr
}

// query is the peer socket to look up: its own local (src) and remote (dst) ends.
type query struct {
	v6       bool
	src, dst netip.AddrPort
}

func queries(local, remote netip.AddrPort) []query {
	// The peer's socket has our remote address as its local one, and ours as its remote.
	q := query{v6: remote.Addr().Is6(), src: remote, dst: local}
	if remote.Addr().Is4In6() && local.Addr().Is4In6() {
		v4 := query{src: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), dst: netip.AddrPortFrom(local.Addr().Unmap(), local.Port())}
		return []query{v4, q}
	}
	return []query{q}
}

// lookup asks inet_diag and falls back to /proc when netlink is not available. A "not
// found" is confirmed in /proc: a kernel without inet_diag's TCP handler (not built, or
// a module not loaded) answers ENOENT for every socket, which must not make every local
// caller look remote.
func lookup(q query) (uint32, error) {
	uid, err := diagLookup(q)
	var na *unavailableError
	if errors.As(err, &na) || errors.Is(err, ErrNotFound) {
		return procLookup(q)
	}
	return uid, err
}

// unavailableError: the netlink socket could not be used at all.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return "sock_diag netlink: " + e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// Layout of the kernel's structures (linux/inet_diag.h, linux/netlink.h).
const (
	nlmsgHdrLen   = 16
	diagSockIDLen = 48 // inet_diag_sockid
	diagReqLen    = 8 + diagSockIDLen
	diagMsgLen    = 4 + diagSockIDLen + 20 // inet_diag_msg
	// tcpListen is TCP_LISTEN: a listener matched by port only is not the peer.
	tcpListen = 10
)

// diagTimeout bounds the wait for the kernel's answer (it answers at once).
const diagTimeout = 2 * time.Second

// diagLookup is an exact inet_diag lookup (no NLM_F_DUMP) of the socket q.
func diagLookup(q query) (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, &unavailableError{err}
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(diagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, &unavailableError{err}
	}
	req := make([]byte, nlmsgHdrLen+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1)
	b := req[nlmsgHdrLen:]
	b[0] = unix.AF_INET
	if q.v6 {
		b[0] = unix.AF_INET6
	}
	b[1] = unix.IPPROTO_TCP
	ne.PutUint32(b[4:], ^uint32(0)) // every state
	putSockID(b[8:], q)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, &unavailableError{err}
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag netlink: receive: %w", err)
	}
	return parseDiag(buf[:n], q)
}

// putSockID writes an inet_diag_sockid: ports and addresses in network byte order, no
// interface, no cookie (INET_DIAG_NOCOOKIE).
func putSockID(id []byte, q query) {
	binary.BigEndian.PutUint16(id[0:], q.src.Port())
	binary.BigEndian.PutUint16(id[2:], q.dst.Port())
	copy(id[4:20], addrBytes(q.src.Addr()))
	copy(id[20:36], addrBytes(q.dst.Addr()))
	binary.NativeEndian.PutUint32(id[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(id[44:], ^uint32(0))
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// parseDiag reads the kernel's answer: an inet_diag_msg for the socket, or an error
// (ENOENT: no such socket).
func parseDiag(b []byte, q query) (uint32, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, errors.New("sock_diag netlink: malformed answer")
		}
		typ, data := ne.Uint16(b[4:]), b[nlmsgHdrLen:l]
		b = b[min(len(b), (l+3)&^3):]
		switch typ {
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return 0, errors.New("sock_diag netlink: malformed error")
			}
			switch errno := unix.Errno(-int32(ne.Uint32(data))); errno {
			case 0:
				continue
			case unix.ENOENT:
				return 0, ErrNotFound
			default:
				return 0, fmt.Errorf("sock_diag netlink: %w", errno)
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(data) < diagMsgLen {
				return 0, errors.New("sock_diag netlink: short inet_diag_msg")
			}
			want := make([]byte, diagSockIDLen)
			putSockID(want, q)
			// The lookup falls back to a listener on the port; and the cookie and
			// interface are the socket's own: compare ports and addresses only.
			if data[1] == tcpListen || !bytes.Equal(data[4:40], want[:36]) {
				return 0, ErrNotFound
			}
			uid, inode := ne.Uint32(data[56+8:]), ne.Uint32(data[56+12:])
			if inode == 0 {
				return 0, ErrOrphaned
			}
			return uid, nil
		}
	}
	return 0, errors.New("sock_diag netlink: no answer for the socket")
}

// procLookup finds q in /proc/self/net/tcp or tcp6.
func procLookup(q query) (uint32, error) {
	file := "/proc/self/net/tcp"
	if q.v6 {
		file += "6"
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, fmt.Errorf("look up the connection's peer: %w", err)
	}
	defer f.Close()
	return scanProc(f, q)
}

// scanProc reads the table of /proc/net/tcp: "sl local rem st queues timer retrnsmt uid
// timeout inode ...", addresses as each 32-bit word in host order, in hex, then ":port".
func scanProc(f *os.File, q query) (uint32, error) {
	local, rem := procAddr(q.src), procAddr(q.dst)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[1] != local || fields[2] != rem {
			continue
		}
		if st, err := strconv.ParseUint(fields[3], 16, 8); err != nil || st == tcpListen {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%s: uid %q: %w", f.Name(), fields[7], err)
		}
		if fields[9] == "0" {
			return 0, ErrOrphaned
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return 0, ErrNotFound
}

// procAddr spells an address as /proc/net/tcp does.
func procAddr(ap netip.AddrPort) string {
	b := addrBytes(ap.Addr())
	var sb strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&sb, "%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	fmt.Fprintf(&sb, ":%04X", ap.Port())
	return sb.String()
}
