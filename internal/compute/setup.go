package compute

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/spec"
)

// The checks below turn the setups a first-time user gets wrong into one line in /status
// and the journal, at once, rather than a late and obscure failure (a connection retried
// for seconds to a socket that never appears, a unit that fails with exit code 203).

// adminConn returns the admin connection string and what it says for the compute whose
// spec is p. The spec's port (its settings or postgresql_conf) is where Postgres will
// listen. When it differs from the connection string's port, the packaged default
// connection string follows the spec; a connection string the operator set is not
// second-guessed: the start fails at once, naming both ports.
func adminConn(connstr string, p *spec.Parsed) (string, connInfo, error) {
	ci, err := parseConnstr(connstr)
	if err != nil {
		return "", connInfo{}, err
	}
	connstr, ci.Port, err = pgconf.AdminConnstr(connstr, ci.Port, p)
	return connstr, ci, err
}

// forSpec is cfg with the admin connection string for spec p (adminConn).
func forSpec(cfg Settings, p *spec.Parsed) (Settings, connInfo, error) {
	connstr, ci, err := adminConn(cfg.Connstr, p)
	if err != nil {
		return cfg, ci, err
	}
	cfg.Connstr = connstr
	return cfg, ci, nil
}

// checkPGBin fails when the postgres binary (PGBIN) is not there or not executable,
// telling a PostgreSQL that is not installed from a PGBIN that points elsewhere.
func checkPGBin(pgbin string) error {
	return checkPGBinAt(pgbin, map[string]string{paths.DefaultPGBin: "postgresql-15", paths.RPMPGBin: "postgresql15-server"})
}

// checkPGBinAt is checkPGBin with the packaged paths given (tests): each path the packages
// default to, with the package that installs it there (Debian's, PGDG's RPM).
func checkPGBinAt(pgbin string, packaged map[string]string) error {
	st, err := os.Stat(pgbin)
	switch {
	case errors.Is(err, fs.ErrNotExist) && packaged[pgbin] != "":
		return fmt.Errorf("PostgreSQL 15 is not installed: no %s (install %s, or set PGBIN in %s)", pgbin, packaged[pgbin], paths.EnvironmentFiles)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("PGBIN %s does not exist (set PGBIN in %s to the postgres binary)", pgbin, paths.EnvironmentFiles)
	case err != nil:
		return fmt.Errorf("PGBIN %s: %w", pgbin, err)
	case st.IsDir():
		return fmt.Errorf("PGBIN %s is a directory: it names the postgres binary itself (%s)", pgbin, filepath.Join(pgbin, "postgres"))
	case st.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("PGBIN %s is not executable", pgbin)
	}
	return nil
}

// checkPortFree fails when another process (another PostgreSQL cluster, say) already
// listens on the port Postgres is to take: on TCP (Postgres listens on every address) or
// on the unix socket in socketDir. Our own Postgres is not running while compute-init
// prepares (compute-postgres.service is ordered after it).
func checkPortFree(port int, socketDir string) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d is already in use by another process (another PostgreSQL cluster?): stop it or give the compute another port", port)
		}
		// Anything else (no permission for a port below 1024, say) is for Postgres to
		// report.
		return nil
	}
	ln.Close()
	sock := filepath.Join(socketDir, ".s.PGSQL."+strconv.Itoa(port))
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("port %d is already in use: a server answers on %s (another PostgreSQL cluster?)", port, sock)
	}
	return nil
}

// unreadableConfig describes a config file the units cannot read.
func unreadableConfig(path string, err error) error {
	who := "this user"
	if name := currentUserName(); name != "" {
		who = "user " + name
	}
	owner := ""
	if st, serr := os.Stat(path); serr == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf(" (mode %04o, uid %d, gid %d)", st.Mode().Perm(), sys.Uid, sys.Gid)
		}
	}
	return fmt.Errorf("config file %s is not readable by %s%s: the compute's units read it as postgres; make it group postgres, mode 0640: %w", path, who, owner, err)
}

// currentUserName is the name of the user this process runs as ("" if unknown).
func currentUserName() string {
	u, err := user.Current()
	if err != nil {
		return ""
	}
	return u.Username
}
