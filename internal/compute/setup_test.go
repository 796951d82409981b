package compute

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// portSpec is a config whose spec moves Postgres to port (settings), or leaves the port
// alone (port 0).
func portSpec(port int) string {
	settings := `[]`
	if port != 0 {
		settings = `[{"name": "port", "value": "` + strconv.Itoa(port) + `", "vartype": "integer"}]`
	}
	return `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {
  "roles": [], "databases": [], "settings": ` + settings + `}}}`
}

func parsedSpec(t *testing.T, body string) *spec.Parsed {
	t.Helper()
	l, err := spec.Load([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return l.Spec
}

func TestAdminConn(t *testing.T) {
	operator := "postgresql://cloud_admin@localhost:6000/postgres?host=/run/compute-postgres"
	for _, tc := range []struct {
		name, connstr string
		specPort      int
		want          string // the connection string; "" for an error
		wantPort      int
	}{
		{"no port in the spec", paths.DefaultConnstr, 0, paths.DefaultConnstr, 55432},
		{"the packaged default follows the spec", paths.DefaultConnstr, 5432, paths.ConnstrWithPort(5432), 5432},
		{"agreeing", operator, 6000, operator, 6000},
		{"the operator's connection string disagrees", operator, 5432, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ci, err := adminConn(tc.connstr, parsedSpec(t, portSpec(tc.specPort)))
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "port 5432") || !strings.Contains(err.Error(), "port 6000") {
					t.Fatalf("adminConn = %q, %v; want an error naming both ports", got, err)
				}
				return
			}
			if err != nil || got != tc.want || ci.Port != tc.wantPort {
				t.Fatalf("adminConn = %q (port %d), %v; want %q (port %d)", got, ci.Port, err, tc.want, tc.wantPort)
			}
			if again, _ := parseConnstr(got); again.Port != tc.wantPort {
				t.Errorf("the connection string %q goes to port %d", got, again.Port)
			}
		})
	}
	if paths.ConnstrWithPort(55432) != paths.DefaultConnstr {
		t.Errorf("ConnstrWithPort(55432) = %q, not the default", paths.ConnstrWithPort(55432))
	}
}

func TestCheckPGBin(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "postgres")
	if err := os.WriteFile(noexec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pgbin, want string }{
		{filepath.Join(dir, "nope", "postgres"), "does not exist"},
		{dir, "is a directory"},
		{noexec, "is not executable"},
	} {
		if err := checkPGBin(tc.pgbin); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.pgbin) {
			t.Errorf("checkPGBin(%s) = %v, want %q", tc.pgbin, err, tc.want)
		}
	}
	// PostgreSQL not installed: nothing at the packaged path.
	packaged := filepath.Join(dir, "usr/lib/postgresql/15/bin/postgres")
	rpm := filepath.Join(dir, "usr/pgsql-15/bin/postgres")
	known := map[string]string{packaged: "postgresql-15", rpm: "postgresql15-server"}
	if err := checkPGBinAt(packaged, known); err == nil || !strings.Contains(err.Error(), "PostgreSQL 15 is not installed: no "+packaged+" (install postgresql-15,") {
		t.Errorf("checkPGBinAt(packaged) without PostgreSQL = %v", err)
	}
	// The .rpm's default (PGDG's path) names PGDG's package and both environment files.
	if err := checkPGBinAt(rpm, known); err == nil || !strings.Contains(err.Error(), "no "+rpm+" (install postgresql15-server, or set PGBIN in /etc/default/compute-tools (/etc/sysconfig/compute-tools from the .rpm))") {
		t.Errorf("checkPGBinAt(rpm) without PostgreSQL = %v", err)
	}
	if _, err := os.Stat(paths.DefaultPGBin); err == nil {
		if err := checkPGBin(paths.DefaultPGBin); err != nil {
			t.Errorf("the installed postgres refused: %v", err)
		}
	}
}

func TestCheckPortFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	if err := checkPortFree(taken, t.TempDir()); err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(taken)+" is already in use") {
		t.Errorf("taken TCP port: %v", err)
	}

	// A free TCP port, but a server on the unix socket of that port.
	free := freePort(t)
	dir := t.TempDir()
	if err := checkPortFree(free, dir); err != nil {
		t.Errorf("free port refused: %v", err)
	}
	sock, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(free)))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	if err := checkPortFree(free, dir); err == nil || !strings.Contains(err.Error(), ".s.PGSQL.") {
		t.Errorf("taken unix socket: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPrepareFailsFastOnBadSetup: each setup that cannot work fails prepare at once with
// one line in the record's error (what /status shows) rather than a late failure.
func TestPrepareFailsFastOnBadSetup(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name, connstr, pgbin, config, want string
	}{
		{"ports disagree", "postgresql://cloud_admin@localhost:6000/postgres?host=/run/compute-postgres", paths.DefaultPGBin, portSpec(5432),
			"the spec sets port 5432 but the admin connection string (COMPUTE_CONNSTR) has port 6000: make them agree"},
		{"wrong PGBIN", paths.DefaultConnstr, "/opt/nowhere/bin/postgres", portSpec(0), "PGBIN /opt/nowhere/bin/postgres does not exist"},
		{"port taken (the default connection string follows the spec)", paths.DefaultConnstr, paths.DefaultPGBin, portSpec(taken),
			"port " + strconv.Itoa(taken) + " is already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pgbin == paths.DefaultPGBin {
				if _, err := os.Stat(tc.pgbin); err != nil {
					t.Skip("PostgreSQL 15 is not installed here")
				}
			}
			st, err := state.Open(filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			cfg := Settings{StateDir: st.Dir(), ConfigFile: writeFile(t, tc.config), PGData: filepath.Join(t.TempDir(), "pgdata"),
				PGBin: tc.pgbin, Connstr: tc.connstr}
			err = Prepare(context.Background(), cfg, &Deps{Store: st, Log: quietLog()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Prepare = %v, want %q", err, tc.want)
			}
			rec, _ := st.Load()
			if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, tc.want) || strings.Contains(*rec.Error, "\n") {
				t.Errorf("record: %s %q", rec.Status, deref(rec.Error))
			}
			if _, err := os.Stat(cfg.PGData); err == nil {
				t.Error("PGDATA was created although the setup cannot work")
			}
		})
	}
}

// unreadableEnv makes the test binary read the config file it names as the user it runs
// as (TestUnreadableConfigFile runs it as postgres).
const unreadableEnv = "COMPUTE_TEST_READ_CONFIG"

func TestUnreadableConfigFile(t *testing.T) {
	if p := os.Getenv(unreadableEnv); p != "" {
		_, err := fileConfig{path: p, log: quietLog()}.obtain(context.Background(), state.Record{})
		if err == nil {
			t.Fatal("read")
		}
		t.Log("ERR: " + err.Error())
		t.Fail()
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as postgres")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skip("no postgres user")
	}
	helper := execxtest.SelfForOthers(t)
	cfgFile := filepath.Join(filepath.Dir(helper), "config.json")
	if err := os.WriteFile(cfgFile, []byte(srcConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	res, _ := execx.Run(context.Background(), execx.Cmd{Path: helper, Args: []string{"-test.run=^TestUnreadableConfigFile$", "-test.v"},
		User: "postgres", Env: []string{unreadableEnv + "=" + cfgFile}})
	out := string(res.Stdout)
	want := "config file " + cfgFile + " is not readable by user postgres (mode 0600, uid 0, gid 0)"
	if !strings.Contains(out, want) || !strings.Contains(out, "make it group postgres, mode 0640") {
		t.Errorf("helper output lacks %q:\n%s", want, out)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
