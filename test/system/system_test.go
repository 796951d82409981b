// Package system is the system test: it runs inside a booted systemd container (see
// scripts/e2e.sh) where the compute-tools .deb is installed, drives the compute through
// systemctl, the HTTP API and psql-style logins, and checks the journal. It skips itself
// anywhere else.
package system

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/logx"
)

var computeID = "compute-local"

const (
	apiURL = "http://127.0.0.1:3080"
	pgAddr = "host=127.0.0.1 port=55432"
)

var (
	signer jose.Signer
	jwks   json.RawMessage
)

func TestMain(m *testing.M) {
	if os.Getenv(hogEnv) != "" { // run by TestVMMonitor as a unit that holds memory
		os.Exit(memoryHog())
	}
	if os.Getenv(agentEnv) != "" { // run by bench/vm-monitor-usage.sh as the agent
		os.Exit(benchAgent())
	}
	if os.Getenv(claimEnv) != "" { // run by TestPrivileges as another user
		os.Exit(claimName())
	}
	if os.Getenv("COMPUTE_SYSTEM_TEST") != "1" {
		fmt.Println("system tests skipped: they run inside the systemd container of scripts/e2e.sh (COMPUTE_SYSTEM_TEST=1)")
		os.Exit(0)
	}
	// Tokens must name the compute ID the units were given.
	if b, err := os.ReadFile("/etc/default/compute-tools"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "COMPUTE_ID="); ok {
				computeID = strings.TrimSpace(v)
			}
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k := jose.JSONWebKey{Key: pub, KeyID: "e2e", Algorithm: string(jose.EdDSA), Use: "sig"}
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k}})
	jwks = b
	signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(err)
	}
	// The tests read the final status after /terminate or a failed start: the
	// post-termination action (default: stop compute.target) is off but in
	// terminate_test.go, which takes this drop-in away.
	if err := os.MkdirAll(filepath.Dir(onTerminatedDropIn), 0o755); err != nil {
		panic(err)
	}
	if err := os.WriteFile(onTerminatedDropIn, []byte("[Service]\nEnvironment=COMPUTE_ON_TERMINATED=none\n"), 0o644); err != nil {
		panic(err)
	}
	if _, err := runMayFail("/bin/systemctl", "daemon-reload"); err != nil {
		panic(err)
	}
	code := m.Run()
	// No secret a test used may be in the journal of the run (issue 12, item 11).
	found, err := checkJournalSecrets()
	switch {
	case err != nil:
		fmt.Printf("FAIL: journal secret check: %v\n", err)
		code = 1
	case len(found) > 0:
		fmt.Printf("FAIL: journal secret check: %d of %d secrets the tests used are in the journal:\n  %s\n",
			len(found), numSecrets(), strings.Join(found, "\n  "))
		code = 1
	default:
		fmt.Printf("journal secret check: none of the %d secrets the tests used is in the journal\n", numSecrets())
	}
	os.Exit(code)
}

func token(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	noteSecret("a JWT", s)
	return s
}

func computeToken(t *testing.T) string { return token(t, map[string]any{"compute_id": computeID}) }
func adminToken(t *testing.T) string {
	return token(t, map[string]any{"scope": "compute_ctl:admin", "aud": []string{"compute"}})
}

func run(t *testing.T, path string, args ...string) string {
	t.Helper()
	res, err := execx.Run(context.Background(), execx.Cmd{Path: path, Args: args})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(res.Stdout)
}

func runMayFail(path string, args ...string) (string, error) {
	res, err := execx.Run(context.Background(), execx.Cmd{Path: path, Args: args})
	return string(res.Stdout) + string(res.Stderr), err
}

func md5Password(password, role string) string {
	s := md5.Sum([]byte(password + role))
	h := hex.EncodeToString(s[:])
	noteSecret("the password of "+role, password)
	noteSecret("the md5 hash of "+role+"'s password", h)
	return h
}

// scramVerifier computes a SCRAM-SHA-256 verifier as Postgres stores it.
func scramVerifier(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	const iter = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		panic(err) // only for a key length out of range
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	v := fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(serverKey))
	noteSecret("a SCRAM password", password)
	noteSecret("a SCRAM verifier", v)
	noteSecret("a SCRAM StoredKey", b64(stored[:]))
	noteSecret("a SCRAM ServerKey", b64(serverKey))
	return v
}

type role struct {
	Name              string  `json:"name"`
	EncryptedPassword *string `json:"encrypted_password"`
}

func specJSON(roles []role, dbs []map[string]any, pgconf string) map[string]any {
	return map[string]any{
		"format_version":          1.0,
		"suspend_timeout_seconds": -1,
		"cluster": map[string]any{
			"cluster_id":      "e2e",
			"roles":           roles,
			"databases":       dbs,
			"postgresql_conf": pgconf,
			"settings": []map[string]any{
				{"name": "max_connections", "value": "50", "vartype": "integer"},
				{"name": "cluster_name", "value": "it's \\ quoted", "vartype": "string"},
			},
		},
	}
}

func ptr(s string) *string { return &s }

var (
	alicePass = "alice-secret"
	bobPass   = "bob 'secret'"
)

func defaultSpec() map[string]any {
	return specJSON(
		[]role{
			{Name: "alice", EncryptedPassword: ptr(md5Password(alicePass, "alice"))},
			{Name: "Bob \"the\" builder", EncryptedPassword: ptr(scramVerifier(bobPass))},
		},
		[]map[string]any{{"name": "appdb", "owner": "alice"}, {"name": "Bob's db", "owner": "Bob \"the\" builder"}},
		"shared_buffers = 32MB\n",
	)
}

func writeConfig(t *testing.T, spec map[string]any) {
	t.Helper()
	cfg := map[string]any{"compute_ctl_config": map[string]any{"jwks": jwks}}
	if spec != nil {
		cfg["spec"] = spec
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	writeRaw(t, b)
}

func writeRaw(t *testing.T, b []byte) {
	t.Helper()
	if err := os.WriteFile("/etc/compute/config.json", b, 0o640); err != nil {
		t.Fatal(err)
	}
	// An existing file keeps its mode through WriteFile (TestBadSetup makes it 0600).
	run(t, "/bin/chmod", "0640", "/etc/compute/config.json")
	run(t, "/bin/chgrp", "postgres", "/etc/compute/config.json")
}

// restart stops the whole compute, clears failed units and starts compute.target again.
func restart(t *testing.T) {
	t.Helper()
	lifecycleStart = time.Now()
	// Stop every unit explicitly: `systemctl stop compute.target` returns once the target
	// is down, before the stop jobs of its parts have finished.
	run(t, "/bin/systemctl", "stop", "compute.target", "compute-lsn-lease.service", "compute-configure.service",
		"compute-postgres.service", "compute-init.service", "compute-api.service", "compute-monitor.timer", "compute-monitor.service", "compute-vm-monitor.service")
	runMayFail("/bin/systemctl", "reset-failed", "compute-init.service", "compute-postgres.service", "compute-configure.service", "compute-api.service", "compute-monitor.service", "compute-vm-monitor.service")
	run(t, "/bin/systemctl", "start", "compute.target")
	// The API resets the record when the compute starts: nothing of the previous
	// lifecycle (a failed or terminated status) may be served once start returned.
	s := localStatus(t)
	if st, err := time.Parse(time.RFC3339Nano, s.StartTime); err != nil || st.Before(lifecycleStart) {
		t.Fatalf("after systemctl start, status %s from %s is left over from before %s", s.Status, s.StartTime, lifecycleStart.Format(time.RFC3339Nano))
	}
}

type statusResp struct {
	StartTime  string  `json:"start_time"`
	Status     string  `json:"status"`
	Error      *string `json:"error"`
	Tenant     *string `json:"tenant"`
	Timeline   *string `json:"timeline"`
	LastActive *string `json:"last_active"`
}

func call(t *testing.T, method, path, tok string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, apiURL+path, bytes.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func status(t *testing.T) statusResp {
	t.Helper()
	code, b := call(t, "GET", "/status", computeToken(t), nil)
	if code != 200 {
		t.Fatalf("/status: %d %s", code, b)
	}
	var s statusResp
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("/status body %s: %v", b, err)
	}
	return s
}

// lifecycleStart is when the test last (re)started the compute: records older than that
// are left over from the previous test (compute-init resets the record when it starts).
var lifecycleStart time.Time

// localStatus reads the status the way an operator does, without a token.
func localStatus(t *testing.T) statusResp {
	t.Helper()
	out := run(t, "/usr/bin/compute-init", "status")
	var s statusResp
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("compute-init status printed %q: %v", out, err)
	}
	return s
}

// waitStatus waits until the compute of the current lifecycle has one of the statuses.
func waitStatus(t *testing.T, want ...string) statusResp {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var s statusResp
	for time.Now().Before(deadline) {
		s = localStatus(t)
		st, err := time.Parse(time.RFC3339Nano, s.StartTime)
		if err == nil && !st.Before(lifecycleStart) {
			for _, w := range want {
				if s.Status == w {
					return s
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("status %q (error %v, start_time %s), want one of %v", s.Status, deref(s.Error), s.StartTime, want)
	return s
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func login(t *testing.T, user, password, db string) (*pgx.Conn, error) {
	t.Helper()
	return loginAt(t, pgAddr, user, password, db)
}

func loginAt(t *testing.T, addr, user, password, db string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(addr + " sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password, cfg.Database = user, password, db
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

func journal(t *testing.T, unit string) string {
	return run(t, "/bin/journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

// milestones counts the journal entries of units with MESSAGE_ID id (the entries our
// binaries send to the journal's native socket for lifecycle milestones).
func milestones(id logx.MessageID, units ...string) int {
	args := []string{"--no-pager", "-o", "cat", "MESSAGE_ID=" + string(id)}
	for _, u := range units {
		args = append(args, "-u", u)
	}
	out, _ := runMayFail("/bin/journalctl", args...)
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "-- ") {
			n++
		}
	}
	return n
}

// expectMilestone waits (journald is asynchronous) until units have logged exactly one
// more milestone id than before, as `journalctl -u UNIT MESSAGE_ID=...` shows it, even
// when the process exited right after logging it.
func expectMilestone(t *testing.T, id logx.MessageID, before int, units ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for milestones(id, units...) <= before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive about now
	if n := milestones(id, units...); n != before+1 {
		t.Errorf("journalctl MESSAGE_ID=%s -u %v: %d entries, want %d", id, units, n, before+1)
	}
}

func TestUnitsVerify(t *testing.T) {
	out, err := runMayFail("/usr/bin/systemd-analyze", "verify", "--man=no", "compute.target",
		"compute-api.service", "compute-init.service", "compute-postgres.service", "compute-configure.service", "compute-lsn-lease.service", "compute-monitor.service", "compute-monitor.timer", "compute-vm-monitor.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestStandaloneLifecycle(t *testing.T) {
	accepted := milestones(logx.MsgConfigAccepted, "compute-init.service")
	running := milestones(logx.MsgRunning, "compute-configure.service")
	writeConfig(t, defaultSpec())
	restart(t)
	s := waitStatus(t, "running", "failed")
	if s.Status != "running" {
		t.Fatalf("status %s: %s\njournal:\n%s", s.Status, deref(s.Error), journal(t, "compute-init.service"))
	}
	// The milestones are in the journal with their MESSAGE_ID, under their units.
	expectMilestone(t, logx.MsgConfigAccepted, accepted, "compute-init.service")
	expectMilestone(t, logx.MsgRunning, running, "compute-configure.service")
	// No unit of the compute failed, the lease unit included (it exits at once for a
	// standalone compute).
	if out, _ := runMayFail("/bin/systemctl", "list-units", "--failed", "--plain", "--no-legend", "compute*"); strings.TrimSpace(out) != "" {
		t.Errorf("failed units after a good start:\n%s", out)
	}
	if _, err := time.Parse(time.RFC3339Nano, s.StartTime); err != nil || !strings.HasSuffix(s.StartTime, "Z") {
		t.Errorf("start_time %q is not RFC3339 UTC with Z", s.StartTime)
	}
	checkLocalAdminAccess(t)

	// Spec roles log in over TCP with their passwords: md5 and SCRAM, names needing quotes.
	c, err := login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatalf("alice login: %v", err)
	}
	var who, owner string
	if err := c.QueryRow(context.Background(),
		"select current_user, pg_get_userbyid(datdba) from pg_database where datname = current_database()").Scan(&who, &owner); err != nil {
		t.Fatal(err)
	}
	if who != "alice" || owner != "alice" {
		t.Errorf("current_user %q owner %q", who, owner)
	}
	if _, err := c.Exec(context.Background(), "create table if not exists kept(x int); insert into kept values (42)"); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	c, err = login(t, `Bob "the" builder`, bobPass, "Bob's db")
	if err != nil {
		t.Fatalf("bob (SCRAM) login: %v", err)
	}
	c.Close(context.Background())
	if _, err := login(t, "alice", "wrong", "appdb"); err == nil {
		t.Error("login with a wrong password succeeded")
	}

	// Settings from the spec reached postgresql.conf, with string quoting.
	c, err = login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatal(err)
	}
	var clusterName, sharedBuffers, maxConn string
	if err := c.QueryRow(context.Background(), "select current_setting('cluster_name'), current_setting('shared_buffers'), current_setting('max_connections')").Scan(&clusterName, &sharedBuffers, &maxConn); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	// Spec settings reached postgresql.conf, a string value with a quote and a backslash intact.
	if clusterName != `it's \ quoted` || sharedBuffers != "32MB" || maxConn != "50" {
		t.Errorf("settings not applied: cluster_name %q shared_buffers %q max_connections %q", clusterName, sharedBuffers, maxConn)
	}

	// JWT rules on the real server.
	if code, b := call(t, "GET", "/status", "", nil); code != 400 || !strings.Contains(string(b), "invalid authorization token") {
		t.Errorf("no token: %d %s", code, b)
	}
	if code, _ := call(t, "GET", "/status", token(t, map[string]any{"compute_id": "other"}), nil); code != 403 {
		t.Errorf("wrong compute_id: %d", code)
	}

	code, b := call(t, "GET", "/metrics.json", computeToken(t), nil)
	var m map[string]uint64
	if code != 200 || json.Unmarshal(b, &m) != nil || m["total_startup_ms"] == 0 {
		t.Errorf("/metrics.json: %d %s", code, b)
	}
	t.Logf("startup metrics: %s", b)

	// The journal tells the startup steps.
	j := journal(t, "compute-init.service")
	for _, want := range []string{"spec accepted", "prepare done"} {
		if !strings.Contains(j, want) {
			t.Errorf("compute-init journal lacks %q:\n%s", want, j)
		}
	}
	if strings.Contains(j, alicePass) || strings.Contains(journal(t, "compute-configure.service"), md5Password(alicePass, "alice")) {
		t.Error("a password reached the journal")
	}

	// Terminate (immediate), then again.
	terminated := milestones(logx.MsgTerminated, "compute-postgres.service", "compute-api.service")
	code, b = call(t, "POST", "/terminate?mode=immediate", adminToken(t), nil)
	if code != 200 || strings.TrimSpace(string(b)) != `{"lsn":null}` {
		t.Fatalf("/terminate: %d %s", code, b)
	}
	if s := status(t); s.Status != "terminated" {
		t.Fatalf("after /terminate: %s", s.Status)
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-postgres.service"); strings.TrimSpace(st) != "inactive" {
		t.Errorf("compute-postgres is %q after /terminate", st)
	}
	// Once, by the stop hook (which exits right after) or the API.
	expectMilestone(t, logx.MsgTerminated, terminated, "compute-postgres.service", "compute-api.service")
	code, b = call(t, "POST", "/terminate", adminToken(t), nil)
	if code != 201 || strings.TrimSpace(string(b)) != `{"lsn":null}` {
		t.Errorf("second /terminate: %d %s", code, b)
	}

	// A restart keeps PGDATA (standalone) and comes back to running.
	restart(t)
	waitStatus(t, "running")
	c, err = login(t, "alice", alicePass, "appdb")
	if err != nil {
		t.Fatal(err)
	}
	var x int
	if err := c.QueryRow(context.Background(), "select x from kept").Scan(&x); err != nil || x != 42 {
		t.Errorf("data lost across restart: %v %d", err, x)
	}
	c.Close(context.Background())
	code, b = call(t, "POST", "/terminate", adminToken(t), nil) // fast
	if code != 200 {
		t.Errorf("fast /terminate: %d %s", code, b)
	}
}

func TestEmptyThenConfigure(t *testing.T) {
	writeConfig(t, nil)
	restart(t)
	if s := waitStatus(t, "empty"); s.Status != "empty" {
		t.Fatal(s.Status)
	}
	body, _ := json.Marshal(map[string]any{"spec": defaultSpec(), "compute_ctl_config": map[string]any{"jwks": jwks}})
	// Bad bodies are refused as Neon does (400 syntax or invalid spec, 422 wrong types)
	// and change nothing.
	bad := defaultSpec()
	bad["cluster"].(map[string]any)["roles"] = []role{{Name: "dup"}, {Name: "dup"}}
	badBody, _ := json.Marshal(map[string]any{"spec": bad, "compute_ctl_config": map[string]any{"jwks": jwks}})
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"spec": {`, 400},
		{string(badBody), 400},
		{`{"spec": {"cluster": 1}, "compute_ctl_config": {"jwks": {"keys": []}}}`, 422},
	} {
		if code, b := call(t, "POST", "/configure", computeToken(t), []byte(tc.body)); code != tc.code {
			t.Errorf("bad /configure %.40s: %d %s, want %d", tc.body, code, b, tc.code)
		}
	}
	if s := status(t); s.Status != "empty" {
		t.Errorf("status after a refused /configure: %s", s.Status)
	}
	code, b := call(t, "POST", "/configure", computeToken(t), body)
	if code != 200 {
		t.Fatalf("/configure: %d %s\n%s", code, b, journal(t, "compute-init.service"))
	}
	var s statusResp
	json.Unmarshal(b, &s)
	if s.Status != "running" {
		t.Fatalf("/configure answered %s", b)
	}
	code, b = call(t, "GET", "/metrics.json", computeToken(t), nil)
	t.Logf("metrics after /configure: %d %s", code, b)
	if _, err := login(t, "alice", alicePass, "appdb"); err != nil {
		t.Fatalf("login after /configure: %v", err)
	}
	// Reconfigure the running compute: a new role, a new password for alice.
	sp := defaultSpec()
	cl := sp["cluster"].(map[string]any)
	cl["roles"] = append(cl["roles"].([]role),
		role{Name: "carol", EncryptedPassword: ptr(md5Password("carol-pw", "carol"))})
	cl["roles"].([]role)[0].EncryptedPassword = ptr(md5Password("alice-new", "alice"))
	body2, _ := json.Marshal(map[string]any{"spec": sp, "compute_ctl_config": map[string]any{"jwks": jwks}})
	code, b = call(t, "POST", "/configure", computeToken(t), body2)
	if code != 200 || !strings.Contains(string(b), `"status":"running"`) {
		t.Fatalf("reconfigure: %d %s\n%s", code, b, journal(t, "compute-configure.service"))
	}
	if c, err := login(t, "carol", "carol-pw", "appdb"); err != nil {
		t.Errorf("carol after reconfigure: %v", err)
	} else {
		c.Close(context.Background())
	}
	if _, err := login(t, "alice", alicePass, "appdb"); err == nil {
		t.Error("alice's old password still works after reconfigure")
	}
	if c, err := login(t, "alice", "alice-new", "appdb"); err != nil {
		t.Errorf("alice's new password: %v", err)
	} else {
		c.Close(context.Background())
	}

	// A reconfigure that cannot be applied fails with the reason...
	orphan := defaultSpec()
	orphan["cluster"].(map[string]any)["databases"] = []map[string]any{{"name": "orphan", "owner": "nobody-has-this-name"}}
	orphanBody, _ := json.Marshal(map[string]any{"spec": orphan, "compute_ctl_config": map[string]any{"jwks": jwks}})
	code, b = call(t, "POST", "/configure", computeToken(t), orphanBody)
	if code != 500 || !strings.Contains(string(b), "nobody-has-this-name") {
		t.Errorf("failing reconfigure: %d %s", code, b)
	}
	if s := status(t); s.Status != "failed" {
		t.Errorf("after a failed reconfigure: %s", s.Status)
	}
	// ...and a good one recovers (compute_ctl would stay failed for good).
	code, b = call(t, "POST", "/configure", computeToken(t), body)
	if code != 200 {
		t.Fatalf("recovering reconfigure: %d %s", code, b)
	}
	if c, err := login(t, "alice", alicePass, "appdb"); err != nil {
		t.Errorf("alice after recovery: %v", err)
	} else {
		c.Close(context.Background())
	}

	// By hand, outside systemd: a dry run prints the plan and changes nothing.
	if err := os.WriteFile("/root/by-hand.json", body2, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "/usr/bin/compute-init", "configure", "-c", "/root/by-hand.json", "--dry-run")
	if !strings.Contains(out, `"alice"`) || !strings.Contains(out, "dry run") || strings.Contains(out, md5Password("alice-new", "alice")) {
		t.Errorf("dry run printed:\n%s", out)
	}
	if _, err := login(t, "alice", "alice-new", "appdb"); err == nil {
		t.Error("the dry run changed a password")
	}
	out = run(t, "/usr/bin/compute-init", "configure", "-c", "/root/by-hand.json")
	if !strings.Contains(out, "applied") {
		t.Errorf("by-hand apply printed %q", out)
	}
	if c, err := login(t, "alice", "alice-new", "appdb"); err != nil {
		t.Errorf("by-hand apply did not change alice's password: %v", err)
	} else {
		c.Close(context.Background())
	}
}

func TestTerminateWhileEmpty(t *testing.T) {
	writeConfig(t, nil)
	restart(t)
	waitStatus(t, "empty")
	done := make(chan struct{})
	var code int
	var b []byte
	go func() { code, b = call(t, "POST", "/terminate", adminToken(t), nil); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("/terminate in empty hangs (Neon's bug)")
	}
	if code != 200 || status(t).Status != "terminated" {
		t.Fatalf("/terminate in empty: %d %s, status %s", code, b, status(t).Status)
	}
	if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-postgres.service"); strings.TrimSpace(st) == "active" {
		t.Error("postgres started after terminate in empty")
	}
}

func TestMalformedConfigFails(t *testing.T) {
	invalid := defaultSpec()
	invalid["cluster"].(map[string]any)["databases"] = []map[string]any{{"name": "x"}} // no owner
	invalidBody, _ := json.Marshal(map[string]any{"spec": invalid, "compute_ctl_config": map[string]any{"jwks": jwks}})
	for _, tc := range []struct {
		name, body, want string
	}{
		{"malformed JSON", `{"spec": {"format_version": 1.0, "cluster": {`, "invalid config"},
		{"invalid spec", string(invalidBody), "owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := milestones(logx.MsgFailed, "compute-init.service")
			writeRaw(t, []byte(tc.body))
			restart(t)
			s := waitStatus(t, "failed")
			// compute-init exits right after logging it.
			expectMilestone(t, logx.MsgFailed, failed, "compute-init.service")
			if !strings.Contains(deref(s.Error), tc.want) {
				t.Errorf("error %q does not mention %q", deref(s.Error), tc.want)
			}
			if st, _ := runMayFail("/bin/systemctl", "is-failed", "compute-init.service"); strings.TrimSpace(st) != "failed" {
				t.Errorf("compute-init is %q, want failed", st)
			}
			if j := journal(t, "compute-init.service"); !strings.Contains(j, tc.want) {
				t.Errorf("journal lacks the reason:\n%s", j)
			}
			if st, _ := runMayFail("/bin/systemctl", "is-active", "compute-postgres.service"); strings.TrimSpace(st) == "active" {
				t.Error("postgres started from a bad config")
			}
			// PGDATA from the earlier tests is untouched.
			if _, err := os.Stat("/var/db/postgres/compute/PG_VERSION"); err != nil {
				t.Errorf("PGDATA damaged: %v", err)
			}
		})
	}
}

func TestPostgresThatWillNotStart(t *testing.T) {
	sp := defaultSpec()
	sp["cluster"].(map[string]any)["postgresql_conf"] = "shared_buffers = 'lots'\n"
	writeConfig(t, sp)
	restart(t)
	s := waitStatus(t, "failed")
	if !strings.Contains(deref(s.Error), "postgres failed") || !strings.Contains(deref(s.Error), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error %q does not explain", deref(s.Error))
	}
	if st, _ := runMayFail("/bin/systemctl", "is-failed", "compute-postgres.service"); strings.TrimSpace(st) != "failed" {
		t.Errorf("compute-postgres is %q, want failed", st)
	}
	// compute-configure, started beside Postgres, gives up with the reason instead of
	// waiting for a Postgres that will not come.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := runMayFail("/bin/systemctl", "is-failed", "compute-configure.service")
		if strings.TrimSpace(st) == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("compute-configure is %q 30 s after Postgres failed, want failed", strings.TrimSpace(st))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if j := journal(t, "compute-configure.service"); !strings.Contains(j, "postgres did not come up") || !strings.Contains(j, `invalid value for parameter \"shared_buffers\"`) {
		t.Errorf("compute-configure's journal does not say why it stopped:\n%s", j)
	}
	// Terminate in failed is refused as in Neon.
	if code, b := call(t, "POST", "/terminate", adminToken(t), nil); code != 412 || !strings.Contains(string(b), "invalid compute status: failed") {
		t.Errorf("terminate while failed: %d %s", code, b)
	}
}

func TestInitdbFailure(t *testing.T) {
	orig, err := os.ReadFile("/etc/default/compute-tools")
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/etc/default/compute-tools", orig, 0o644)
	// A PGDATA postgres cannot create: initdb fails.
	os.WriteFile("/etc/default/compute-tools", append(orig, []byte("\nPGDATA=/proc/compute-no-such\n")...), 0o644)
	writeConfig(t, defaultSpec())
	restart(t)
	s := waitStatus(t, "failed")
	if !strings.Contains(deref(s.Error), "initdb") {
		t.Errorf("error %q does not name initdb", deref(s.Error))
	}
	if st, _ := runMayFail("/bin/systemctl", "is-failed", "compute-init.service"); strings.TrimSpace(st) != "failed" {
		t.Errorf("compute-init is %q, want failed", st)
	}
}
