package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/tcpowner"
)

// peerGuard lets only some local OS users call the internal port, which has no other
// authentication (the reference serves every caller there: any local user could install
// extensions or grant privileges as the admin role through POST /extensions and /grants).
// For each connection it asks the kernel who owns the caller's socket (internal/tcpowner)
// at the connection's first request; internal/api answers 403 (and logs the uid and the
// reason) to every request of a connection whose owner is not allowed. A caller on
// another host (an INTERNAL_HTTP_ADDR that is not loopback) has no local owner: it is
// served as before, as the reference serves it.
type peerGuard struct {
	// allowed maps the allowed uids to their names; nil lets every caller in.
	allowed map[uint32]string
	// lookup is tcpowner.PeerUID (tests may replace it).
	lookup func(local, remote netip.AddrPort) (uint32, error)
	// localAddr says whether an address is one of this host's (net.InterfaceAddrs).
	localAddr func(netip.Addr) bool
}

// newPeerGuard resolves the user names (or numeric uids) of the setting; "*" (alone or
// among others) lets every caller in. Names that are not users here are skipped with a
// warning (compute-api's own user on an image that runs it as root, say); an empty list
// is the default.
func newPeerGuard(names []string, log *slog.Logger) *peerGuard {
	g := &peerGuard{lookup: tcpowner.PeerUID, localAddr: isHostAddr}
	if len(names) == 0 {
		names = strings.Split(paths.DefaultInternalHTTPUsers, ",")
	}
	if slices.Contains(names, "*") {
		log.Warn("the internal port serves every local user (INTERNAL_HTTP_USERS=*)")
		return g
	}
	g.allowed = map[uint32]string{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if uid, err := strconv.ParseUint(n, 10, 32); err == nil {
			g.allowed[uint32(uid)] = n
			continue
		}
		u, err := user.Lookup(n)
		if err != nil {
			log.Warn("internal port: an allowed user does not exist here; skipped", "user", n, "err", err)
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			log.Warn("internal port: an allowed user has no numeric uid; skipped", "user", n, "uid", u.Uid)
			continue
		}
		g.allowed[uint32(uid)] = n
	}
	return g
}

// peerKey is the context key of a connection's *peerCheck.
type peerKey struct{}

// peerCheck is the verdict on one connection, made once.
type peerCheck struct {
	once   sync.Once
	conn   net.Conn
	ok     bool
	uid    string
	reason string
}

// connContext gives each connection its check (http.Server.ConnContext); nothing is
// looked up before the first request, so that the accept loop never waits.
func (g *peerGuard) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, &peerCheck{conn: c})
}

// check decides whether the connection's caller may use the internal port.
func (g *peerGuard) check(pc *peerCheck) {
	if g.allowed == nil {
		pc.ok = true
		return
	}
	local, lok := addrPort(pc.conn.LocalAddr())
	remote, rok := addrPort(pc.conn.RemoteAddr())
	if !lok || !rok {
		pc.reason = "not a TCP connection"
		return
	}
	uid, err := g.lookup(local, remote)
	switch {
	case err == nil:
		pc.uid = strconv.FormatUint(uint64(uid), 10)
		if _, ok := g.allowed[uid]; ok {
			pc.ok = true
			return
		}
		pc.reason = "the caller's user is not in INTERNAL_HTTP_USERS"
	case errors.Is(err, tcpowner.ErrNotFound) && !remote.Addr().IsLoopback() && remote.Addr().Unmap() != local.Addr().Unmap() && !g.localAddr(remote.Addr()):
		// A caller on another host: no local user to check (the reference's behaviour).
		pc.ok = true
	default:
		pc.reason = fmt.Sprintf("the owner of the caller's socket is unknown: %v", err)
	}
}

// allow is api.Options.InternalCaller: nil when the request's connection may be served,
// else why not (the uid and the reason; never a secret).
func (g *peerGuard) allow(r *http.Request) error {
	pc, _ := r.Context().Value(peerKey{}).(*peerCheck)
	if pc == nil {
		// Not served through connContext: refuse rather than guess.
		return errors.New("no connection to check")
	}
	pc.once.Do(func() { g.check(pc) })
	if pc.ok {
		return nil
	}
	if pc.uid != "" {
		return fmt.Errorf("uid %s: %s", pc.uid, pc.reason)
	}
	return errors.New(pc.reason)
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return t.AddrPort(), true
}

// isHostAddr says whether a is an address of one of this host's interfaces.
func isHostAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		// Unknown: count it as local, so that an unknown owner is refused.
		return true
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}
