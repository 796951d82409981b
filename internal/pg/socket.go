package pg

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/paths"
)

// followDir is the socket directory whose connections follow the live socket
// (paths.DefaultSocketDir; tests change it).
var followDir = paths.DefaultSocketDir

// followLiveSocket wraps dial: a connection to a socket in the packaged socket directory
// whose port has no socket there goes to the one socket that is there. The spec decides
// Postgres's port (its settings or postgresql_conf), and a port change takes effect only
// when Postgres restarts: a reconfiguration that moves the port, or a compute-api or
// vm-monitor given the packaged connection string while the spec moved Postgres, would
// otherwise dial a socket that does not exist (or not yet). Postgres makes one socket per
// port in that directory (systemd's RuntimeDirectory=, emptied at each stop), so the one
// there is the running server's. With none, or with several (a stale one next to a
// starting server), the dial goes where it was asked. A directory the operator chose is
// never second-guessed.
func followLiveSocket(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network == "unix" && filepath.Dir(addr) == followDir {
			addr = liveSocket(addr)
		}
		return dial(ctx, network, addr)
	}
}

// liveSocket returns addr, or the only Postgres socket of its directory when addr does
// not exist.
func liveSocket(addr string) string {
	if _, err := os.Lstat(addr); !errors.Is(err, fs.ErrNotExist) {
		return addr
	}
	entries, err := os.ReadDir(filepath.Dir(addr))
	if err != nil {
		return addr
	}
	var live string
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, ".s.PGSQL.") || strings.HasSuffix(n, ".lock") || e.Type()&fs.ModeSocket == 0 {
			continue
		}
		if live != "" {
			return addr
		}
		live = filepath.Join(filepath.Dir(addr), n)
	}
	if live == "" {
		return addr
	}
	return live
}

// LivePort is the port a client that is not pgx (pg_dump) should use for host and port:
// port, or the port of the only socket in the packaged socket directory when host is that
// directory and port has no socket there (followLiveSocket).
func LivePort(host string, port uint16) uint16 {
	if host != followDir {
		return port
	}
	addr := filepath.Join(host, ".s.PGSQL."+strconv.Itoa(int(port)))
	live := liveSocket(addr)
	if live == addr {
		return port
	}
	n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(live), ".s.PGSQL."))
	if err != nil || n <= 0 || n > 65535 {
		return port
	}
	return uint16(n)
}
