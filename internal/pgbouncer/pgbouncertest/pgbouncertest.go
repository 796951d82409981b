// Package pgbouncertest starts a real pgbouncer (the distribution's binary, Debian
// package pgbouncer) for a test: unprivileged (as the postgres OS user when the test runs
// as root), on a free loopback port, with its ini file, admin console and log in a
// throwaway directory.
package pgbouncertest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pgtest"
)

// Binary is where Debian's package installs pgbouncer.
const Binary = "/usr/sbin/pgbouncer"

// Instance is a running pgbouncer.
type Instance struct {
	Dir     string
	IniPath string
	LogPath string
	Port    int
	proc    *execx.Process
}

// Connstr reaches the admin console as the admin user postgres.
func (i *Instance) Connstr() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=postgres sslmode=disable", i.Port)
}

// Start starts pgbouncer and waits until its admin console answers; the test is skipped
// when the binary is not installed. It is stopped when the test ends.
func Start(t testing.TB) *Instance {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skipf("pgbouncertest: %s not installed (Debian package pgbouncer): %v", Binary, err)
	}
	dir := pgtest.OwnedDir(t, "pgb")
	uid, gid := pgtest.OSUserIDs(t)
	i := &Instance{Dir: dir, IniPath: filepath.Join(dir, "pgbouncer.ini"), LogPath: filepath.Join(dir, "pgbouncer.log"), Port: freePort(t)}
	ini := fmt.Sprintf(`;; test pgbouncer
[databases]

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = trust
auth_file = %s
admin_users = postgres
logfile = %s
; a comment that must survive
default_pool_size = 20
`, i.Port, dir, filepath.Join(dir, "userlist.txt"), i.LogPath)
	for name, body := range map[string]string{i.IniPath: ini, filepath.Join(dir, "userlist.txt"): "\"postgres\" \"\"\n"} {
		if err := os.WriteFile(name, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(name, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := execx.Start(ctx, execx.Cmd{Path: Binary, Args: []string{i.IniPath}, User: pgtest.OSUser, Dir: dir})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	i.proc = p
	go func() { _, _ = io.Copy(io.Discard, p.Stdout()) }()
	t.Cleanup(func() {
		cancel()
		_, _ = p.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgx.Connect(ctx, i.Connstr())
		if err == nil {
			c.Close(ctx)
			return i
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(i.LogPath)
			t.Fatalf("pgbouncertest: pgbouncer did not answer: %v\nstderr: %s\nlog: %s", err, p.Stderr(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID is pgbouncer's process id.
func (i *Instance) PID() int { return i.proc.Pid() }

// Alive reports whether pgbouncer's admin console still answers.
func (i *Instance) Alive() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, i.Connstr())
	if err != nil {
		return false
	}
	c.Close(ctx)
	return true
}

// Setting returns a setting's value as the admin console's SHOW CONFIG gives it.
func (i *Instance) Setting(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(i.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		if len(vals) >= 2 && fmt.Sprint(vals[0]) == name {
			return fmt.Sprint(vals[1])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("pgbouncertest: SHOW CONFIG has no %s", name)
	return ""
}

// Log returns pgbouncer's log file.
func (i *Instance) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(i.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FreePort returns a loopback TCP port that nothing listened on a moment ago.
func FreePort(t testing.TB) int { return freePort(t) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
