package system

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
)

// withPort is the default spec with Postgres moved to port (a spec setting).
func withPort(port string) map[string]any {
	sp := defaultSpec()
	c := sp["cluster"].(map[string]any)
	c["settings"] = append(c["settings"].([]map[string]any), map[string]any{"name": "port", "value": port, "vartype": "integer"})
	return sp
}

// TestBadSetup: the setups a first-time user gets wrong fail at once with one line in
// /status and compute-init's journal; a spec that moves the port with the packaged
// connection string runs.
func TestBadSetup(t *testing.T) {
	orig, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(envFile, orig, 0o644)
	failsWith := func(t *testing.T, want string) {
		t.Helper()
		restart(t)
		s := waitStatus(t, "failed", "running")
		if s.Status != "failed" || !strings.Contains(deref(s.Error), want) || strings.Contains(deref(s.Error), "\n") {
			t.Fatalf("status %s, error %q; want failed with %q", s.Status, deref(s.Error), want)
		}
		if j := journal(t, "compute-init.service"); !strings.Contains(j, want) {
			t.Errorf("compute-init's journal lacks %q", want)
		}
	}

	t.Run("wrong PGBIN", func(t *testing.T) {
		defer os.WriteFile(envFile, orig, 0o644)
		os.WriteFile(envFile, append(orig, []byte("\nPGBIN=/usr/lib/postgresql/14/bin/postgres\n")...), 0o644)
		writeConfig(t, defaultSpec())
		failsWith(t, "PGBIN /usr/lib/postgresql/14/bin/postgres does not exist")
	})
	t.Run("config file not readable by postgres", func(t *testing.T) {
		writeConfig(t, defaultSpec())
		defer writeConfig(t, defaultSpec())
		run(t, "/bin/chown", "root:root", "/etc/compute/config.json")
		run(t, "/bin/chmod", "0600", "/etc/compute/config.json")
		failsWith(t, "config file /etc/compute/config.json is not readable by user postgres (mode 0600, uid 0, gid 0)")
	})
	t.Run("port taken by another server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:5433")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		writeConfig(t, withPort("5433"))
		failsWith(t, "port 5433 is already in use")
	})
	t.Run("ports disagree", func(t *testing.T) {
		defer os.WriteFile(envFile, orig, 0o644)
		// The packaged default's meaning, spelled otherwise: an operator's string.
		os.WriteFile(envFile, append(orig, []byte("\nCOMPUTE_CONNSTR=host=/run/compute-postgres port=55432 user=cloud_admin dbname=postgres\n")...), 0o644)
		writeConfig(t, withPort("5434"))
		failsWith(t, "the spec sets port 5434 but the admin connection string (COMPUTE_CONNSTR) has port 55432")
	})
	t.Run("the packaged connection string follows the spec's port", func(t *testing.T) {
		writeConfig(t, withPort("5434"))
		restart(t)
		if s := waitStatus(t, "running", "failed"); s.Status != "running" {
			t.Fatalf("status %s: %s", s.Status, deref(s.Error))
		}
		// The spec applied through the moved port, and the roles log in on it.
		c, err := loginAt(t, "host=127.0.0.1 port=5434", "alice", alicePass, "appdb")
		if err != nil {
			t.Fatalf("alice on port 5434: %v", err)
		}
		c.Close(context.Background())
		// compute-api's Postgres routes take the packaged connection string too: they
		// reach the server on its moved port.
		if code, b := call(t, "POST", "/check_writability", computeToken(t), nil); code != 200 {
			t.Errorf("/check_writability on port 5434: %d %s", code, b)
		}
		if code, b := call(t, "GET", "/dbs_and_roles", computeToken(t), nil); code != 200 || !strings.Contains(string(b), "alice") {
			t.Errorf("/dbs_and_roles on port 5434: %d %s", code, b)
		}
		// pg_dump, run by compute-api (its own user, its sandbox), streams the schema.
		if code, b := call(t, "GET", "/database_schema?database=appdb", computeToken(t), nil); code != 200 || !strings.Contains(string(b), "PostgreSQL database dump") {
			t.Errorf("/database_schema on port 5434: %d %.300s", code, b)
		}
		// A reconfiguration without the port: Postgres keeps listening on 5434 until it
		// restarts (a reload does not move it), and the configure step reaches it there.
		body, _ := json.Marshal(map[string]any{"spec": defaultSpec(), "compute_ctl_config": map[string]any{"jwks": jwks}})
		if code, b := call(t, "POST", "/configure", computeToken(t), body); code != 200 || !strings.Contains(string(b), `"status":"running"`) {
			t.Errorf("a reconfiguration back to the default port: %d %s\n%s", code, b, journal(t, "compute-configure.service"))
		}
		code, b := call(t, "POST", "/terminate", adminToken(t), nil)
		if code != 200 {
			t.Errorf("/terminate: %d %s", code, b)
		}
	})
}

// installToken puts the control-plane token where the README says (the systemd credential
// compute-control-plane-token in /etc/credstore) and reloads systemd, whose generator
// then gives compute-init and compute-api their LoadCredential= drop-ins; the cleanup
// removes it and reloads again.
func installToken(t *testing.T, token string) {
	t.Helper()
	if err := os.MkdirAll("/etc/credstore", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/credstore/compute-control-plane-token", []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove("/etc/credstore/compute-control-plane-token")
		runMayFail("/bin/systemctl", "daemon-reload")
	})
	run(t, "/bin/systemctl", "daemon-reload")
}
