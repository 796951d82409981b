package system

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/sktest"
)

// The neon-mode system test: the installed compute against protocol-level fakes of a
// pageserver, three safekeepers and a control plane (/dist/neonfakes, run as a transient
// unit), with the postgres shim of internal/sktest answering --sync-safekeepers.

const (
	neonTenant    = "9ef87a5bf0d92544f6fafeeb3239695c"
	neonTimeline  = "de200bd42b49cc1814412c7e592dd6e9"
	neonFakesBin  = "/dist/neonfakes"
	neonFakesUnit = "compute-e2e-neonfakes.service"
	neonAddrFile  = "/run/compute-e2e-neonfakes.json"
	neonShimDir   = "/var/lib/compute-e2e-shim"
	neonPGData    = "/var/db/postgres/neon"
	neonMarker    = "served by the fake pageserver"
	neonStartLSN  = "0/16B9188" // what the shim prints at startup
	neonEndLSN    = "0/16B9F00" // what it prints at /terminate
	neonSKLSN     = "0/3000000" // where the safekeepers agree in the control-plane case
	neonStaticLSN = "1/0"       // beyond the archive's WAL: the standby waits there
	pgSocketDir   = "/run/compute-postgres"
	defaultsFile  = "/etc/default/compute-tools"
	pgExtDir      = "/usr/share/postgresql/15/extension"
)

// neonFakes is a running /dist/neonfakes.
type neonFakes struct {
	Pageserver           string   `json:"pageserver"`
	PageserverConnstring string   `json:"pageserver_connstring"`
	PageserverGRPC       string   `json:"pageserver_grpc_url"`
	Safekeepers          []string `json:"safekeepers"`
	ControlPlane         string   `json:"control_plane"`
	SyncShim             string   `json:"sync_shim"`

	token, cplaneToken string
}

type fakeLog struct {
	Pageserver     []pageservertest.Session  `json:"pageserver"`
	PageserverGRPC []pageservertest.GRPCCall `json:"pageserver_grpc"`
	Safekeeper     []struct {
		Queries        int `json:"queries"`
		AuthFailures   int `json:"auth_failures"`
		OptionFailures int `json:"option_failures"`
	} `json:"safekeepers"`
	ControlPlane []struct {
		ComputeID  string `json:"compute_id"`
		Authorized bool   `json:"authorized"`
	} `json:"control_plane"`
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startNeonFakes starts the fakes as a transient unit and waits for their addresses.
func startNeonFakes(t *testing.T) *neonFakes {
	t.Helper()
	if _, err := os.Stat(neonFakesBin); err != nil {
		t.Skipf("neon system test: %s is missing (scripts/e2e.sh builds it): %v", neonFakesBin, err)
	}
	f := &neonFakes{token: "storage-" + randomHex(t, 16), cplaneToken: "cplane-" + randomHex(t, 16)}
	noteSecret("the storage token", f.token)
	noteSecret("the control plane token", f.cplaneToken)
	os.Remove(neonAddrFile)
	runMayFail("/bin/systemctl", "stop", neonFakesUnit)
	runMayFail("/bin/systemctl", "reset-failed", neonFakesUnit)
	run(t, "/usr/bin/systemd-run", "--unit="+neonFakesUnit, "--description=neon fakes of the system test", "--collect", "--property=Type=exec",
		"--setenv=NEONFAKES_TOKEN="+f.token, "--setenv=NEONFAKES_CPLANE_TOKEN="+f.cplaneToken,
		neonFakesBin, "--tenant="+neonTenant, "--timeline="+neonTimeline, "--marker="+neonMarker, "--addr-file="+neonAddrFile,
		"--sync-shim="+neonShimDir, "--shim-lsn="+neonStartLSN)
	t.Cleanup(func() { runMayFail("/bin/systemctl", "stop", neonFakesUnit) })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(neonAddrFile)
		if err == nil {
			if err := json.Unmarshal(b, f); err != nil {
				t.Fatalf("%s: %v", neonAddrFile, err)
			}
			break
		}
		if st, _ := runMayFail("/bin/systemctl", "is-active", neonFakesUnit); strings.TrimSpace(st) == "failed" || time.Now().After(deadline) {
			t.Fatalf("neonfakes did not come up (%s):\n%s", strings.TrimSpace(st), journal(t, neonFakesUnit))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if f.SyncShim == "" || len(f.Safekeepers) != 3 {
		t.Fatalf("neonfakes addresses: %+v", f)
	}
	return f
}

func (f *neonFakes) http(t *testing.T, method, path string, body []byte) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, f.ControlPlane+path, strings.NewReader(string(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("neonfakes %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("neonfakes %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func (f *neonFakes) log(t *testing.T) fakeLog {
	t.Helper()
	var l fakeLog
	if err := json.Unmarshal(f.http(t, "GET", "/fake/log", nil), &l); err != nil {
		t.Fatalf("neonfakes log: %v", err)
	}
	return l
}

// setSafekeepers makes the fake safekeepers agree on lsn ("" : they do not know the
// timeline, so the compute must run --sync-safekeepers).
func (f *neonFakes) setSafekeepers(t *testing.T, lsn string) {
	t.Helper()
	f.http(t, "PUT", "/fake/safekeepers?lsn="+lsn, nil)
}

func (f *neonFakes) skQueries(t *testing.T) (queries, authFails, optionFails int) {
	for _, s := range f.log(t).Safekeeper {
		queries += s.Queries
		authFails += s.AuthFailures
		optionFails += s.OptionFailures
	}
	return
}

// basebackupSince returns the session of the one basebackup query the fake pageserver got
// after the first `since` sessions.
func (f *neonFakes) basebackupSince(t *testing.T, since int) (pageservertest.Session, string) {
	t.Helper()
	sessions := f.log(t).Pageserver
	var found []pageservertest.Session
	var queries []string
	for _, s := range sessions[min(since, len(sessions)):] {
		for _, q := range s.Queries {
			if strings.HasPrefix(q, "basebackup ") {
				found = append(found, s)
				queries = append(queries, q)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("pageserver got %d basebackup queries this lifecycle, want 1: %q", len(found), queries)
	}
	return found[0], queries[0]
}

func (f *neonFakes) spec(mode any) map[string]any {
	sp := specJSON(
		[]role{{Name: "alice", EncryptedPassword: ptr(md5Password(alicePass, "alice"))}},
		[]map[string]any{{"name": "appdb", "owner": "alice"}},
		"shared_buffers = 32MB\n",
	)
	// The archive's cluster ran with max_connections = 100: a hot standby (static mode)
	// refuses to start with less, so the spec keeps the default.
	sp["cluster"].(map[string]any)["settings"] = []map[string]any{
		{"name": "cluster_name", "value": "neon e2e", "vartype": "string"},
	}
	sp["tenant_id"] = neonTenant
	sp["timeline_id"] = neonTimeline
	sp["pageserver_connstring"] = f.PageserverConnstring
	sp["safekeeper_connstrings"] = f.Safekeepers
	sp["storage_auth_token"] = f.token
	sp["mode"] = mode
	return sp
}

// writeDefaults writes the units' environment file: the original plus the neon settings
// (the shim as PGBIN, a PGDATA of its own so that the standalone tests keep theirs) and
// extra lines.
func writeDefaults(t *testing.T, orig []byte, f *neonFakes, extra ...string) {
	t.Helper()
	b := append([]byte{}, orig...)
	b = append(b, fmt.Sprintf("\n# neon system test\nPGBIN=%s\nPGDATA=%s\n", f.SyncShim, neonPGData)...)
	for _, l := range extra {
		b = append(b, (l + "\n")...)
	}
	if err := os.WriteFile(defaultsFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// installNeonStub puts an empty `neon` extension into this throwaway container's
// PostgreSQL: the spec apply of a neon-mode primary creates extension neon (as
// compute_ctl does) and Debian's PostgreSQL has none.
func installNeonStub(t *testing.T) {
	t.Helper()
	control := filepath.Join(pgExtDir, "neon.control")
	if _, err := os.Stat(control); err == nil {
		return // a real one
	}
	files := map[string]string{
		control: "comment = 'stub of the neon extension for the compute-tools system test'\n" +
			"default_version = '1.0'\nrelocatable = true\n",
		filepath.Join(pgExtDir, "neon--1.0.sql"): "-- stub: no objects\n",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Skipf("neon system test: cannot install the neon extension stub: %v", err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
}

// callWithin is call with a bound on the wait: a hanging /terminate fails the test.
func callWithin(t *testing.T, d time.Duration, method, path, tok string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, apiURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: d}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v (status now %s)", method, path, err, localStatus(t).Status)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// postgresEnviron reads the environment of compute-postgres's main process.
func postgresEnviron(t *testing.T) map[string]string {
	t.Helper()
	pid := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-p", "MainPID", "--value", "compute-postgres.service"))
	b, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatalf("environment of postgres (pid %s): %v", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// checkLocalAdminAccess: another OS user (nobody) cannot be the admin role, neither over
// the unix socket (its directory is postgres's, 0750) nor over TCP (a password is asked).
func checkLocalAdminAccess(t *testing.T) {
	t.Helper()
	fi, err := os.Stat(pgSocketDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("%s has mode %v, want 0750", pgSocketDir, fi.Mode().Perm())
	}
	for _, host := range []string{pgSocketDir, "127.0.0.1"} {
		out, err := runMayFail("/usr/sbin/runuser", "-u", "nobody", "--", "/usr/bin/psql", "-X", "-w", "-A", "-t",
			"-h", host, "-p", "55432", "-U", "cloud_admin", "-d", "postgres", "-c", "select current_user")
		if err == nil {
			t.Errorf("OS user nobody logged in as cloud_admin over %s: %q", host, out)
		}
		t.Logf("nobody as cloud_admin over %s: %v", host, err)
	}
}

func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=55432 user=cloud_admin dbname=postgres sslmode=disable", pgSocketDir))
	if err != nil {
		t.Fatalf("cloud_admin over the socket: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func metricsJSON(t *testing.T) map[string]any {
	t.Helper()
	code, b := call(t, "GET", "/metrics.json", computeToken(t), nil)
	var m map[string]any
	if code != 200 || json.Unmarshal(b, &m) != nil {
		t.Fatalf("/metrics.json: %d %s", code, b)
	}
	return m
}

func startNeon(t *testing.T, want string) statusResp {
	t.Helper()
	restart(t)
	s := waitStatus(t, "running", "failed")
	if s.Status != want {
		t.Fatalf("status %s (error %s), want %s\ncompute-init:\n%s\ncompute-postgres:\n%s", s.Status, deref(s.Error), want,
			journal(t, "compute-init.service"), journal(t, "compute-postgres.service"))
	}
	return s
}

// neonSetup starts the fakes and installs the neon extension stub; at the end of the test
// it stops the compute while it still has the neon settings, then puts the original
// defaults file back (returned, for writeDefaults) and removes what neon mode left.
func neonSetup(t *testing.T) (*neonFakes, []byte) {
	t.Helper()
	f := startNeonFakes(t)
	orig, err := os.ReadFile(defaultsFile)
	if err != nil {
		t.Fatal(err)
	}
	installNeonStub(t)
	t.Cleanup(func() {
		runMayFail("/bin/systemctl", "stop", "compute.target", "compute-lsn-lease.service", "compute-configure.service",
			"compute-postgres.service", "compute-init.service", "compute-api.service", "compute-monitor.service")
		if err := os.WriteFile(defaultsFile, orig, 0o644); err != nil {
			t.Errorf("restore %s: %v", defaultsFile, err)
		}
		os.RemoveAll(neonPGData)
		os.Remove("/run/compute/jwks.json")
	})
	return f, orig
}

func TestNeonMode(t *testing.T) {
	f, orig := neonSetup(t)
	shim := f.SyncShim

	t.Run("primary", func(t *testing.T) {
		sktest.SetShimFail(t, shim, "")
		sktest.SetShimLSN(t, shim, neonStartLSN)
		f.setSafekeepers(t, "")
		writeDefaults(t, orig, f)
		writeConfig(t, f.spec("Primary"))
		since := len(f.log(t).Pageserver)
		skBefore, _, _ := f.skQueries(t)
		callsBefore := sktest.ShimSyncCalls(t, shim)

		s := startNeon(t, "running")
		if deref(s.Tenant) != neonTenant || deref(s.Timeline) != neonTimeline {
			t.Errorf("status tenant %s timeline %s", deref(s.Tenant), deref(s.Timeline))
		}

		// The safekeepers were asked, did not agree (unknown timeline), so the shim ran
		// once, with PGDATA and the token.
		q, authFails, optFails := f.skQueries(t)
		if q-skBefore < 2 || authFails != 0 || optFails != 0 {
			t.Errorf("safekeepers: %d TIMELINE_STATUS queries (want a quorum), %d auth and %d option failures", q-skBefore, authFails, optFails)
		}
		if n := sktest.ShimSyncCalls(t, shim) - callsBefore; n != 1 {
			t.Errorf("--sync-safekeepers ran %d times at startup, want 1", n)
		}
		env := sktest.ShimEnv(t, shim)
		if env["PGDATA"] != neonPGData || env["NEON_AUTH_TOKEN"] != f.token {
			t.Errorf("shim saw PGDATA %q and the token set: %v", env["PGDATA"], env["NEON_AUTH_TOKEN"] == f.token)
		}

		// The pageserver got exactly the basebackup of the synced LSN, with the token.
		sess, query := f.basebackupSince(t, since)
		if want := fmt.Sprintf("basebackup %s %s %s --gzip", neonTenant, neonTimeline, neonStartLSN); query != want {
			t.Errorf("basebackup query %q, want %q", query, want)
		}
		if sess.Password != f.token {
			t.Errorf("pageserver password is not the storage token")
		}
		// The storage token reaches Postgres (read by its ExecStart shell as postgres,
		// not by systemd from the state directory), and the control-plane token does not.
		environ := postgresEnviron(t)
		if environ["NEON_AUTH_TOKEN"] != f.token {
			t.Errorf("Postgres's NEON_AUTH_TOKEN is not the storage token (set: %v)", environ["NEON_AUTH_TOKEN"] != "")
		}
		if _, ok := environ["NEON_CONTROL_PLANE_TOKEN"]; ok {
			t.Error("Postgres has NEON_CONTROL_PLANE_TOKEN in its environment")
		}
		if _, err := os.Lstat("/run/compute/postgres.env"); err == nil {
			t.Error("/run/compute/postgres.env exists")
		}
		checkLocalAdminAccess(t)
		if !strings.Contains(sess.Params["options"], "neon.compute_mode=primary") || sess.Params["user"] != "no_user" {
			t.Errorf("pageserver startup params %v", sess.Params)
		}

		m := metricsJSON(t)
		for _, k := range []string{"basebackup_bytes", "pageserver_connect_micros"} {
			if v, _ := m[k].(float64); v <= 0 {
				t.Errorf("/metrics.json %s = %v, want > 0", k, m[k])
			}
		}
		for _, k := range []string{"basebackup_ms", "sync_sk_check_ms", "sync_safekeepers_ms", "total_startup_ms"} {
			if _, ok := m[k].(float64); !ok {
				t.Errorf("/metrics.json lacks %s", k)
			}
		}
		t.Logf("neon startup metrics: %v", m)

		conf, err := os.ReadFile(filepath.Join(neonPGData, "postgresql.conf"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"neon.tenant_id='" + neonTenant + "'",
			"neon.timeline_id='" + neonTimeline + "'",
			"neon.pageserver_connstring='" + f.PageserverConnstring + "'",
			"neon.safekeepers='" + strings.Join(f.Safekeepers, ",") + "'",
			"neon.compute_mode=primary",
		} {
			if !strings.Contains(string(conf), want+"\n") {
				t.Errorf("postgresql.conf lacks %q", want)
			}
		}
		if _, err := os.Stat(filepath.Join(neonPGData, "neon.signal")); err != nil {
			t.Errorf("neon.signal: %v", err)
		}
		if _, err := os.Stat(filepath.Join(neonPGData, "standby.signal")); err == nil {
			t.Error("a primary has standby.signal")
		}

		// Postgres serves the basebackup's data, and the spec was applied to it.
		c, err := login(t, "alice", alicePass, "appdb")
		if err != nil {
			t.Fatalf("alice login: %v", err)
		}
		c.Close(context.Background())
		if _, err := login(t, "alice", "wrong", "appdb"); err == nil {
			t.Error("login with a wrong password succeeded")
		}
		c, err = login(t, "alice", alicePass, "postgres")
		if err != nil {
			t.Fatalf("alice login to postgres: %v", err)
		}
		var tenant, marker string
		var inRecovery bool
		if err := c.QueryRow(context.Background(), "select tenant, marker, pg_is_in_recovery() from neonfakes_marker").Scan(&tenant, &marker, &inRecovery); err != nil {
			t.Fatalf("marker table of the archive: %v", err)
		}
		c.Close(context.Background())
		if tenant != neonTenant || marker != neonMarker || inRecovery {
			t.Errorf("marker %q %q, in recovery %v", tenant, marker, inRecovery)
		}
		for _, u := range []string{"compute-init.service", "compute-configure.service", "compute-postgres.service"} {
			if strings.Contains(journal(t, u), f.token) {
				t.Errorf("the storage token reached the journal of %s", u)
			}
		}

		// /terminate: Postgres stops, the final sync's LSN is the answer.
		sktest.SetShimLSN(t, shim, neonEndLSN)
		code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t))
		if want := `{"lsn":"` + neonEndLSN + `"}`; code != 200 || strings.TrimSpace(string(b)) != want {
			t.Fatalf("/terminate: %d %s, want 200 %s\n%s", code, b, want, journal(t, "compute-postgres.service"))
		}
		if st := status(t); st.Status != "terminated" {
			t.Errorf("after /terminate: %s", st.Status)
		}
		logged := false
		for _, l := range strings.Split(journal(t, "compute-postgres.service"), "\n") {
			if strings.Contains(l, "compute terminated") && strings.Contains(l, "lsn="+neonEndLSN) {
				logged = true
			}
		}
		if !logged {
			t.Errorf("the postgres stop hook did not log the final LSN %s with the termination", neonEndLSN)
		}
		if n := sktest.ShimSyncCalls(t, shim) - callsBefore; n != 2 {
			t.Errorf("--sync-safekeepers ran %d times, want 2 (startup and terminate)", n)
		}
		code, b = call(t, "POST", "/terminate", adminToken(t), nil)
		if want := `{"lsn":"` + neonEndLSN + `"}`; code != 201 || strings.TrimSpace(string(b)) != want {
			t.Errorf("second /terminate: %d %s", code, b)
		}
	})

	t.Run("final sync fails", func(t *testing.T) {
		sktest.SetShimFail(t, shim, "")
		sktest.SetShimLSN(t, shim, neonStartLSN)
		f.setSafekeepers(t, "")
		writeDefaults(t, orig, f)
		writeConfig(t, f.spec("Primary"))
		startNeon(t, "running")

		const reason = "no safekeeper quorum (injected by the test)"
		sktest.SetShimFail(t, shim, reason)
		t.Cleanup(func() { sktest.SetShimFail(t, shim, "") })
		code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t))
		if code != 500 || !strings.Contains(string(b), "final safekeeper sync") || !strings.Contains(string(b), reason) {
			t.Errorf("/terminate with a failing final sync: %d %s", code, b)
		}
		s := localStatus(t)
		if s.Status != "failed" || !strings.Contains(deref(s.Error), "final safekeeper sync") || !strings.Contains(deref(s.Error), reason) {
			t.Errorf("status %s, error %q", s.Status, deref(s.Error))
		}
		if strings.Contains(deref(s.Error), f.token) {
			t.Error("the storage token is in the error")
		}
	})

	t.Run("static", func(t *testing.T) {
		sktest.SetShimFail(t, shim, "")
		f.setSafekeepers(t, "")
		writeDefaults(t, orig, f)
		writeConfig(t, f.spec(map[string]string{"Static": neonStaticLSN}))
		since := len(f.log(t).Pageserver)
		callsBefore := sktest.ShimSyncCalls(t, shim)
		startNeon(t, "running")

		sess, query := f.basebackupSince(t, since)
		if want := fmt.Sprintf("basebackup %s %s %s --gzip --replica", neonTenant, neonTimeline, neonStaticLSN); query != want {
			t.Errorf("basebackup query %q, want %q", query, want)
		}
		if !strings.Contains(sess.Params["options"], "neon.compute_mode=static") {
			t.Errorf("pageserver startup options %q", sess.Params["options"])
		}
		if n := sktest.ShimSyncCalls(t, shim) - callsBefore; n != 0 {
			t.Errorf("a static compute ran --sync-safekeepers %d times", n)
		}
		if _, err := os.Stat(filepath.Join(neonPGData, "standby.signal")); err != nil {
			t.Errorf("standby.signal: %v", err)
		}
		conf, _ := os.ReadFile(filepath.Join(neonPGData, "postgresql.conf"))
		if !strings.Contains(string(conf), "recovery_target_lsn='"+neonStaticLSN+"'\n") {
			t.Error("postgresql.conf lacks recovery_target_lsn")
		}

		c := adminConn(t)
		var inRecovery bool
		var marker string
		if err := c.QueryRow(context.Background(), "select pg_is_in_recovery(), marker from neonfakes_marker").Scan(&inRecovery, &marker); err != nil {
			t.Fatalf("query the hot standby: %v", err)
		}
		if !inRecovery || marker != neonMarker {
			t.Errorf("in recovery %v, marker %q: want a hot standby with the archive's data", inRecovery, marker)
		}
		if _, err := c.Exec(context.Background(), "create table not_on_a_standby(x int)"); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("a write on the standby: %v", err)
		}
		c.Close(context.Background())

		code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t))
		if code != 200 || strings.TrimSpace(string(b)) != `{"lsn":null}` {
			t.Errorf("/terminate of a static compute: %d %s", code, b)
		}
	})

	// Neon main's newer storage protocol: pageserver_connection_info preferring gRPC; the
	// basebackup comes from the gRPC pageserver, none from the libpq one.
	t.Run("grpc", func(t *testing.T) {
		writeDefaults(t, orig, f)
		sp := f.spec("Replica")
		delete(sp, "pageserver_connstring")
		sp["pageserver_connection_info"] = map[string]any{"shard_count": 0, "stripe_size": nil, "prefer_protocol": "grpc",
			"shards": map[string]any{"0000": map[string]any{"pageservers": []any{
				map[string]any{"id": 1, "libpq_url": f.PageserverConnstring, "grpc_url": f.PageserverGRPC}}}}}
		writeConfig(t, sp)
		before := f.log(t)
		startNeon(t, "running")
		after := f.log(t)
		if len(after.Pageserver) != len(before.Pageserver) {
			t.Errorf("the libpq pageserver was asked: %+v", after.Pageserver[len(before.Pageserver):])
		}
		calls := after.PageserverGRPC[len(before.PageserverGRPC):]
		if len(calls) != 1 || calls[0].Method != "GetBaseBackup" || calls[0].ShardID != "0000" || !calls[0].Replica ||
			calls[0].TenantID != neonTenant || calls[0].Auth != "Bearer "+f.token {
			t.Fatalf("gRPC calls %+v", calls)
		}
		c := adminConn(t)
		var marker string
		if err := c.QueryRow(context.Background(), "select marker from neonfakes_marker").Scan(&marker); err != nil || marker != neonMarker {
			t.Errorf("marker %q %v: want the archive's data", marker, err)
		}
		c.Close(context.Background())
		code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t))
		if code != 200 {
			t.Errorf("/terminate: %d %s", code, b)
		}
	})

	t.Run("control plane", func(t *testing.T) {
		sktest.SetShimFail(t, shim, "")
		sktest.SetShimLSN(t, shim, neonEndLSN)
		f.setSafekeepers(t, neonSKLSN)
		t.Cleanup(func() { f.setSafekeepers(t, "") })
		body, _ := json.Marshal(map[string]any{
			"status":             "attached",
			"spec":               f.spec("Primary"),
			"compute_ctl_config": map[string]any{"jwks": jwks},
		})
		f.http(t, "PUT", "/fake/cplane", body)
		writeDefaults(t, orig, f, "CONTROL_PLANE_URI="+f.ControlPlane)
		// The token as the README says: a systemd credential that only compute-init and
		// compute-api load (through the generator's drop-ins).
		installToken(t, f.cplaneToken)
		// No spec and no keys in the config file: both must come from the control plane.
		writeRaw(t, []byte("{}\n"))
		since := len(f.log(t).Pageserver)
		cpBefore := len(f.log(t).ControlPlane)
		callsBefore := sktest.ShimSyncCalls(t, shim)
		startNeon(t, "running")

		// compute-init asks for the spec, compute-api for the key set; both with the token.
		reqs := f.log(t).ControlPlane[cpBefore:]
		if len(reqs) != 2 {
			t.Errorf("control plane requests %+v, want two (compute-init and compute-api)", reqs)
		}
		for _, r := range reqs {
			if r.ComputeID != computeID || !r.Authorized {
				t.Errorf("control plane request %+v, want one for %s with the token", r, computeID)
			}
		}
		_, query := f.basebackupSince(t, since)
		if want := fmt.Sprintf("basebackup %s %s %s --gzip", neonTenant, neonTimeline, neonSKLSN); query != want {
			t.Errorf("basebackup query %q, want %q (the safekeepers agree there)", query, want)
		}
		if n := sktest.ShimSyncCalls(t, shim) - callsBefore; n != 0 {
			t.Errorf("--sync-safekeepers ran %d times although the safekeepers agree", n)
		}
		// compute-api takes the keys compute-init got from the control plane.
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, b := call(t, "GET", "/status", computeToken(t), nil)
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/status with a token signed by the control plane's keys: %d %s\n%s", code, b, journal(t, "compute-api.service"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if c, err := login(t, "alice", alicePass, "appdb"); err != nil {
			t.Errorf("alice (spec from the control plane): %v", err)
		} else {
			c.Close(context.Background())
		}
		for _, u := range []string{"compute-init.service", "compute-api.service"} {
			j := journal(t, u)
			if strings.Contains(j, f.cplaneToken) {
				t.Errorf("the control plane token reached the journal of %s", u)
			}
			if strings.Contains(j, "NEON_CONTROL_PLANE_TOKEN in the environment") {
				t.Errorf("%s warns about the environment variable although the credential is used", u)
			}
		}
		if _, ok := postgresEnviron(t)["NEON_CONTROL_PLANE_TOKEN"]; ok {
			t.Error("Postgres has the control-plane token in its environment")
		}

		// POST /refresh_configuration (Neon main; the neon extension's call when its
		// pageserver stops answering): the control plane now names another pageserver
		// (gRPC only); compute-api fetches the spec with its token and compute-configure
		// applies it to the running Postgres.
		moved := f.spec("Primary")
		moved["pageserver_connection_info"] = map[string]any{"shard_count": 0, "stripe_size": nil, "prefer_protocol": "grpc",
			"shards": map[string]any{"0000": map[string]any{"pageservers": []any{
				map[string]any{"id": 2, "libpq_url": nil, "grpc_url": f.PageserverGRPC}}}}}
		body, _ = json.Marshal(map[string]any{"status": "attached", "spec": moved, "compute_ctl_config": map[string]any{"jwks": jwks}})
		f.http(t, "PUT", "/fake/cplane", body)
		cpBefore = len(f.log(t).ControlPlane)
		resp, err := http.Post("http://127.0.0.1:3081/refresh_configuration", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/refresh_configuration: %d", resp.StatusCode)
		}
		confPath := filepath.Join(neonPGData, "postgresql.conf")
		deadline = time.Now().Add(60 * time.Second)
		for {
			conf, _ := os.ReadFile(confPath)
			if s := localStatus(t); s.Status == "running" && strings.Contains(string(conf), "# no neon.pageserver_connstring\n") {
				break
			} else if s.Status == "failed" || time.Now().After(deadline) {
				t.Fatalf("after /refresh_configuration: status %s (error %s)\ncompute-api:\n%s\ncompute-configure:\n%s", s.Status, deref(s.Error),
					journal(t, "compute-api.service"), journal(t, "compute-configure.service"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if reqs := f.log(t).ControlPlane[cpBefore:]; len(reqs) != 1 || !reqs[0].Authorized {
			t.Errorf("control plane requests of the refresh %+v, want one with the token", reqs)
		}

		code, b := callWithin(t, 90*time.Second, "POST", "/terminate", adminToken(t))
		if want := `{"lsn":"` + neonEndLSN + `"}`; code != 200 || strings.TrimSpace(string(b)) != want {
			t.Errorf("/terminate: %d %s, want 200 %s", code, b, want)
		}
	})
}
