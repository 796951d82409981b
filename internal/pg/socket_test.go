package pg

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// listen makes a unix socket named like Postgres's for port in dir; accepted
// connections are reported on the returned channel.
func listen(t *testing.T, dir, port string) <-chan string {
	t.Helper()
	path := filepath.Join(dir, ".s.PGSQL."+port)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			got <- port
			c.Close()
		}
	}()
	return got
}

func TestFollowLiveSocket(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "pgsock") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	old := followDir
	followDir = dir
	t.Cleanup(func() { followDir = old })

	cfg, err := Config("postgresql://cloud_admin@localhost:55432/postgres?host="+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() error {
		c, err := cfg.DialFunc(context.Background(), "unix", filepath.Join(dir, ".s.PGSQL.55432"))
		if err == nil {
			c.Close()
		}
		return err
	}
	// No socket at all: the dial goes where it was asked, and fails.
	if err := dial(); err == nil {
		t.Fatal("dialled a socket that does not exist")
	}
	// Postgres listens on the spec's port 5434 only: the dial follows it.
	got5434 := listen(t, dir, "5434")
	if err := os.WriteFile(filepath.Join(dir, ".s.PGSQL.5434.lock"), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("dial with one live socket on another port: %v", err)
	}
	if p := LivePort(dir, 55432); p != 5434 {
		t.Errorf("LivePort = %d, want 5434 (pg_dump's --port)", p)
	}
	if p := LivePort("/elsewhere", 55432); p != 55432 {
		t.Errorf("LivePort outside the packaged directory = %d", p)
	}
	if p := <-got5434; p != "5434" {
		t.Fatalf("connected to %s", p)
	}
	// Two sockets (a stale one beside the server): no guessing, the asked one is absent.
	listen(t, dir, "6000")
	if err := dial(); err == nil {
		t.Fatal("dialled with two candidate sockets")
	}
	// The asked socket exists: it is used.
	got55432 := listen(t, dir, "55432")
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	if p := <-got55432; p != "55432" {
		t.Fatalf("connected to %s", p)
	}
	// Another directory is never followed.
	other, err := os.MkdirTemp("/tmp", "pgsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	listen(t, other, "5434")
	if c, err := cfg.DialFunc(context.Background(), "unix", filepath.Join(other, ".s.PGSQL.55432")); err == nil {
		c.Close()
		t.Fatal("a connection outside the packaged socket directory followed another socket")
	}
}
