package pgconf

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgtest"
)

// TestStandaloneConfStartsPostgres writes our postgresql.conf, pg_hba.conf and
// pg_ident.conf into a real initdb'd PGDATA, starts PostgreSQL 15 and checks what it
// made of them.
func TestStandaloneConfStartsPostgres(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (PostgreSQL runs as the postgres user)")
	}
	bin := paths.PGBinDir(paths.DefaultPGBin)
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		t.Skipf("PostgreSQL 15 not installed: %v", err)
	}
	uid, gid := pgtest.OSUserIDs(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := func(asUser string, tool string, args ...string) (string, error) {
		res, err := execx.Run(ctx, execx.Cmd{Path: filepath.Join(bin, tool), Args: args, User: asUser})
		return strings.TrimSpace(string(res.Stdout)), err
	}

	// Short path: it also holds the unix socket (108-byte limit).
	dir := pgtest.OwnedDir(t, "pgconf-")
	data := filepath.Join(dir, "data")
	if _, err := run("postgres", "initdb", "-D", data, "-U", "cloud_admin", "--no-sync", "--no-instructions",
		"-A", "reject", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		t.Fatalf("initdb: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	p := parsed(t, `{"format_version": 1, "suspend_timeout_seconds": -1,
	  "cluster": {"roles": [], "databases": [], "settings": [
	    {"name": "cluster_name", "value": "it's a \\ test", "vartype": "string"},
	    {"name": "max_connections", "value": "20", "vartype": "integer"},
	    {"name": "shared_buffers", "value": "16MB", "vartype": "string"}]}}`)
	opts := Options{Port: port, SocketDir: dir, ListenAddresses: "127.0.0.1", InternalHTTPPort: 3081, Files: testFiles}
	hba, err := HBA("cloud_admin")
	if err != nil {
		t.Fatal(err)
	}
	ident, err := Ident("cloud_admin", paths.AdminOSUsers())
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"postgresql.conf": PostgresqlConf(p, opts),
		"pg_hba.conf":     hba,
		"pg_ident.conf":   ident,
	} {
		path := filepath.Join(data, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	logFile := filepath.Join(dir, "postgres.log")
	if _, err := run("postgres", "pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "30", "start"); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("pg_ctl start: %v\n%s", err, log)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		execx.Run(stopCtx, execx.Cmd{Path: filepath.Join(bin, "pg_ctl"), Args: []string{"-D", data, "-m", "immediate", "-w", "stop"}, User: "postgres"})
	})

	sport := strconv.Itoa(port)
	show := func(asUser, param string) string {
		t.Helper()
		out, err := run(asUser, "psql", "-X", "-A", "-t", "-w", "-h", dir, "-p", sport, "-U", "cloud_admin", "-d", "postgres", "-c", "SHOW "+param)
		if err != nil {
			t.Fatalf("psql as %s: SHOW %s: %v", asUser, param, err)
		}
		return out
	}
	// Both OS users of the ident map reach the admin role over the socket.
	for _, osUser := range []string{"postgres", ""} {
		for param, want := range map[string]string{
			"port":                    sport,
			"lc_messages":             "C.UTF-8",
			"lc_numeric":              "C.UTF-8",
			"cluster_name":            `it's a \ test`,
			"max_connections":         "20",
			"listen_addresses":        "127.0.0.1",
			"unix_socket_directories": dir,
			"neon.compute_mode":       "primary",
		} {
			if got := show(osUser, param); got != want {
				t.Errorf("as %q: SHOW %s = %q, want %q", osUser, param, got, want)
			}
		}
	}

	// Another OS user is not the admin role, over the socket (made searchable for the
	// check) or over TCP.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pgtest.CheckStrangerRefused(t, dir, port)

	// Other roles need a password; so does the admin role over TCP.
	for _, args := range [][]string{
		{"-h", dir, "-U", "someone"},
		{"-h", "127.0.0.1", "-U", "cloud_admin"},
	} {
		args = append(append([]string{"-X", "-w", "-p", sport, "-d", "postgres"}, args...), "-c", "SELECT 1")
		_, err := run("postgres", "psql", args...)
		if err == nil || !strings.Contains(err.Error(), "password") {
			t.Errorf("psql %v: err = %v, want a password failure", args, err)
		}
	}
}
