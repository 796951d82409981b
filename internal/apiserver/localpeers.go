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
// The check is per route: the admin routes (POST /extensions and /grants, which act as the
// admin role) serve the users of INTERNAL_HTTP_ADMIN_USERS, the others (Postgres's
// /extension_server) those of INTERNAL_HTTP_USERS. Every Postgres backend runs as
// postgres, so SQL that can make HTTP requests (pgsql-http, pg_net) calls as postgres:
// postgres is in the first list by default and not in the admin one.
// For each connection it asks the kernel who owns the caller's socket (internal/tcpowner)
// at the connection's first request; internal/api answers 403 (and logs the uid and the
// reason) to every request whose route the owner may not use. A caller on another host
// (an INTERNAL_HTTP_ADDR that is not loopback) has no local owner: it is served as
// before, as the reference serves it.
type peerGuard struct {
	// users and admins map the allowed uids (of the other routes, of the admin routes)
	// to their names; nil lets every caller in.
	users, admins map[uint32]string
	// lookup is tcpowner.PeerUID (tests may replace it).
	lookup func(local, remote netip.AddrPort) (uint32, error)
	// localAddr says whether an address is one of this host's (net.InterfaceAddrs).
	localAddr func(netip.Addr) bool
}

// newPeerGuard resolves the user names (or numeric uids) of both settings (users:
// INTERNAL_HTTP_USERS, admins: INTERNAL_HTTP_ADMIN_USERS); an empty list is the setting's
// default.
func newPeerGuard(users, admins []string, log *slog.Logger) *peerGuard {
	return &peerGuard{
		users:  allowedUIDs(users, paths.DefaultInternalHTTPUsers, paths.EnvInternalHTTPUsers, log),
		admins: allowedUIDs(admins, paths.DefaultInternalHTTPAdminUsers, paths.EnvInternalHTTPAdminUsers, log),
		lookup: tcpowner.PeerUID, localAddr: isHostAddr,
	}
}

// allowedUIDs resolves the names of one setting (def when empty); "*" (alone or among
// others) lets every caller in (nil). Names that are not users here are skipped with a
// warning (compute-api's own user on an image that runs it as root, say).
func allowedUIDs(names []string, def, setting string, log *slog.Logger) map[uint32]string {
	if len(names) == 0 {
		names = strings.Split(def, ",")
	}
	if slices.Contains(names, "*") {
		log.Warn("the internal port serves every local user", "setting", setting)
		return nil
	}
	allowed := map[uint32]string{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if uid, err := strconv.ParseUint(n, 10, 32); err == nil {
			allowed[uint32(uid)] = n
			continue
		}
		u, err := user.Lookup(n)
		if err != nil {
			log.Warn("internal port: an allowed user does not exist here; skipped", "setting", setting, "user", n, "err", err)
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			log.Warn("internal port: an allowed user has no numeric uid; skipped", "setting", setting, "user", n, "uid", u.Uid)
			continue
		}
		allowed[uint32(uid)] = n
	}
	return allowed
}

// peerKey is the context key of a connection's *peerCheck.
type peerKey struct{}

// peerCheck is what is known of one connection's caller, looked up once.
type peerCheck struct {
	once sync.Once
	conn net.Conn
	// uid is the owner of the caller's socket when known.
	uid   uint32
	known bool
	// elsewhere: the caller is on another host (no local owner to check).
	elsewhere bool
	// reason says why the owner is unknown (when neither known nor elsewhere).
	reason string
}

// connContext gives each connection its check (http.Server.ConnContext); nothing is
// looked up before the first request, so that the accept loop never waits.
func (g *peerGuard) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, &peerCheck{conn: c})
}

// check finds the connection's caller.
func (g *peerGuard) check(pc *peerCheck) {
	local, lok := addrPort(pc.conn.LocalAddr())
	remote, rok := addrPort(pc.conn.RemoteAddr())
	if !lok || !rok {
		pc.reason = "not a TCP connection"
		return
	}
	uid, err := g.lookup(local, remote)
	switch {
	case err == nil:
		pc.uid, pc.known = uid, true
	case errors.Is(err, tcpowner.ErrNotFound) && !remote.Addr().IsLoopback() && remote.Addr().Unmap() != local.Addr().Unmap() && !g.localAddr(remote.Addr()):
		// A caller on another host: no local user to check (the reference's behaviour).
		pc.elsewhere = true
	default:
		pc.reason = fmt.Sprintf("the owner of the caller's socket is unknown: %v", err)
	}
}

// verdict says whether the checked caller may use a route: admin routes need
// g.admins, the others g.users. Nil when it may, else why not (the uid and the reason;
// never a secret).
func (g *peerGuard) verdict(pc *peerCheck, admin bool) error {
	allowed, setting := g.users, paths.EnvInternalHTTPUsers
	if admin {
		allowed, setting = g.admins, paths.EnvInternalHTTPAdminUsers
	}
	switch {
	case allowed == nil || pc.elsewhere:
		return nil
	case !pc.known:
		return errors.New(pc.reason)
	}
	if _, ok := allowed[pc.uid]; ok {
		return nil
	}
	return fmt.Errorf("uid %d: the caller's user is not in %s", pc.uid, setting)
}

// allow is api.Options.InternalCaller: nil when the request may be served on its route
// (admin: POST /extensions or /grants), else why not.
func (g *peerGuard) allow(r *http.Request, admin bool) error {
	if (admin && g.admins == nil) || (!admin && g.users == nil) {
		return nil
	}
	pc, _ := r.Context().Value(peerKey{}).(*peerCheck)
	if pc == nil {
		// Not served through connContext: refuse rather than guess.
		return errors.New("no connection to check")
	}
	pc.once.Do(func() { g.check(pc) })
	return g.verdict(pc, admin)
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
