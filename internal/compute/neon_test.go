package compute

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/sktest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const (
	testTenant   = "3aa8fcc61f6d357410b7de754b1d9001"
	testTimeline = "de200bd42b49cc1814412c7e592dd6e9"
	testToken    = "storage-token-secret"
)

// neonRig is a neon-mode compute's surroundings: a fake pageserver serving a real PG15
// basebackup, three fake safekeepers and a postgres shim for --sync-safekeepers.
type neonRig struct {
	ps    *pageservertest.FakePageserver
	sks   []*sktest.FakeSafekeeper
	shim  string
	cfg   Settings
	deps  *Deps
	store *state.Store
}

func newNeonRig(t *testing.T) *neonRig { return newNeonRigWith(t, nil) }

func newNeonRigWith(t *testing.T, tweak func(*pageservertest.Options)) *neonRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the basebackup archive is made by initdb as the postgres user)")
	}
	archive := pageservertest.BasebackupArchive(t)
	pc := pageservertest.Options{Password: testToken, Archive: archive}
	if tweak != nil {
		tweak(&pc)
	}
	r := &neonRig{ps: pageservertest.Start(t, pc)}
	for i := 0; i < 3; i++ {
		r.sks = append(r.sks, sktest.NewFakeSafekeeper(t, testTenant, testTimeline, testToken))
	}
	dir := t.TempDir()
	r.shim = sktest.WriteSyncShim(t, dir, "0/2A3B4C8", "")
	st, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	r.store = st
	r.deps = &Deps{Store: st}
	r.cfg = Settings{StateDir: st.Dir(), ConfigFile: filepath.Join(dir, "config.json"), PGData: filepath.Join(dir, "pgdata"),
		PGBin: r.shim, Connstr: "postgresql://cloud_admin@localhost:55432/postgres?host=/tmp", PrivilegedRole: "neon_superuser",
		InternalHTTPPort: 3081}
	return r
}

func (r *neonRig) writeConfig(t *testing.T, mode string) {
	t.Helper()
	r.writeConfigWith(t, mode, `"pageserver_connstring": "`+r.ps.Connstr()+`"`)
}

// writeConfigWith writes a config whose pageserver part is pageserver (JSON members).
func (r *neonRig) writeConfigWith(t *testing.T, mode, pageserver string) {
	t.Helper()
	sks := make([]string, len(r.sks))
	for i, s := range r.sks {
		sks[i] = `"` + s.Addr + `"`
	}
	body := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
	  "tenant_id": "` + testTenant + `", "timeline_id": "` + testTimeline + `",
	  ` + pageserver + `, "safekeeper_connstrings": [` + strings.Join(sks, ",") + `],
	  "storage_auth_token": "` + testToken + `", "mode": ` + mode + `,
	  "cluster": {"roles": [], "databases": []}}}`
	if err := os.WriteFile(r.cfg.ConfigFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareNeonPrimaryNotSynced(t *testing.T) {
	r := newNeonRig(t)
	r.writeConfig(t, `"Primary"`) // the fake safekeepers do not know the timeline: sync runs
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	q := r.ps.Queries()
	if len(q) != 1 || q[0] != "basebackup "+testTenant+" "+testTimeline+" 0/2A3B4C8 --gzip" {
		t.Fatalf("pageserver queries %q", q)
	}
	for _, s := range r.ps.Sessions() {
		if s.Password != testToken || s.Params["application_name"] != "compute_ctl" || !strings.Contains(s.Params["options"], "neon.compute_mode=primary") {
			t.Errorf("pageserver session %+v", s.Params)
		}
	}
	if n := sktest.ShimSyncCalls(t, r.shim); n != 1 {
		t.Errorf("--sync-safekeepers ran %d times", n)
	}
	env := sktest.ShimEnv(t, r.shim)
	if env["PGDATA"] != r.cfg.PGData || env["NEON_AUTH_TOKEN"] != testToken {
		t.Errorf("sync environment %v", env)
	}
	for _, f := range []string{"PG_VERSION", "global/pg_control", "neon.signal", "postgresql.conf"} {
		if _, err := os.Stat(filepath.Join(r.cfg.PGData, f)); err != nil {
			t.Errorf("PGDATA lacks %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(r.cfg.PGData, "standby.signal")); err == nil {
		t.Error("standby.signal in a primary")
	}
	if l, err := os.Readlink(filepath.Join(r.cfg.PGData, "pg_dynshmem")); err != nil || l != "/dev/shm/" {
		t.Errorf("pg_dynshmem: %q %v", l, err)
	}
	conf, _ := os.ReadFile(filepath.Join(r.cfg.PGData, "postgresql.conf"))
	for _, want := range []string{"neon.tenant_id='" + testTenant + "'", "neon.timeline_id='" + testTimeline + "'", "neon.safekeepers=", "include_if_exists = 'compute_ctl_temp_override.conf'"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("postgresql.conf lacks %q", want)
		}
	}
	// The size limit is lifted from Postgres's start on; configure empties the file.
	if b, err := os.ReadFile(filepath.Join(r.cfg.PGData, "compute_ctl_temp_override.conf")); err != nil || string(b) != "neon.max_cluster_size=-1\n" {
		t.Errorf("temp override %q, %v", b, err)
	}
	tokFile := paths.NeonAuthTokenFile(r.cfg.StateDir)
	if tok, _ := os.ReadFile(tokFile); string(tok) != testToken+"\n" {
		t.Errorf("storage token file %q", tok)
	}
	if fi, err := os.Stat(tokFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("storage token file mode: %v, %v", fi, err)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Init || rec.Storage != spec.StorageNeon || rec.Metrics.BasebackupBytes == 0 || rec.Metrics.PageserverConnectMicros == 0 {
		t.Errorf("record %+v", rec)
	}

	// Termination: the final sync's LSN is what /terminate answers.
	sktest.SetShimLSN(t, r.shim, "0/2A3B4D0")
	if _, err := statetest.Set(r.store, state.Running, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := statetest.Set(r.store, state.TerminationPendingFast, nil); err != nil {
		t.Fatal(err)
	}
	if err := PostgresStopped(context.Background(), r.cfg, StopInfo{ServiceResult: "success"}, r.deps); err != nil {
		t.Fatal(err)
	}
	rec, _ = r.store.Load()
	if rec.Status != state.Terminated || rec.TerminateLSN == nil || *rec.TerminateLSN != "0/2A3B4D0" {
		t.Fatalf("after the stop hook: %s lsn %v", rec.Status, rec.TerminateLSN)
	}
}

func TestPrepareNeonSyncedSkipsSync(t *testing.T) {
	r := newNeonRig(t)
	for _, s := range r.sks {
		s.SetStatus("0/1234568", "0/1234568")
	}
	r.writeConfig(t, `"Primary"`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	if n := sktest.ShimSyncCalls(t, r.shim); n != 0 {
		t.Errorf("--sync-safekeepers ran %d times although the safekeepers are in sync", n)
	}
	if q := r.ps.Queries(); len(q) != 1 || !strings.Contains(q[0], " 0/1234568 --gzip") {
		t.Errorf("queries %q", q)
	}
}

func TestPrepareNeonStaticAndReplica(t *testing.T) {
	for _, tc := range []struct{ mode, query string }{
		{`{"Static": "0/16B5A50"}`, "basebackup " + testTenant + " " + testTimeline + " 0/16B5A50 --gzip --replica"},
		{`"Replica"`, "basebackup " + testTenant + " " + testTimeline + " --gzip --replica"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			r := newNeonRig(t)
			r.writeConfig(t, tc.mode)
			if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
				t.Fatal(err)
			}
			if q := r.ps.Queries(); len(q) != 1 || q[0] != tc.query {
				t.Errorf("queries %q, want %q", q, tc.query)
			}
			if n := sktest.ShimSyncCalls(t, r.shim); n != 0 {
				t.Errorf("sync ran for a non-primary")
			}
			if _, err := os.Stat(filepath.Join(r.cfg.PGData, "standby.signal")); err != nil {
				t.Errorf("no standby.signal: %v", err)
			}
			// No catalog work on a standby: no override.
			if b, err := os.ReadFile(filepath.Join(r.cfg.PGData, "compute_ctl_temp_override.conf")); err != nil || len(b) != 0 {
				t.Errorf("temp override of a %s compute: %q, %v", tc.mode, b, err)
			}
		})
	}
}

func TestNeonFinalSyncFailureFails(t *testing.T) {
	r := newNeonRig(t)
	r.writeConfig(t, `"Primary"`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	sktest.SetShimFail(t, r.shim, "no quorum")
	statetest.Set(r.store, state.Running, nil)
	statetest.Set(r.store, state.TerminationPendingImmediate, nil)
	if err := PostgresStopped(context.Background(), r.cfg, StopInfo{ServiceResult: "success"}, r.deps); err == nil {
		t.Fatal("no error from a failed final sync")
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "final safekeeper sync") {
		t.Fatalf("status %s error %v", rec.Status, rec.Error)
	}
	if strings.Contains(*rec.Error, testToken) {
		t.Error("the token reached the error text")
	}
}

func TestPrepareNeonPageserverRefuses(t *testing.T) {
	r := newNeonRig(t)
	r.ps.SetFaults(pageservertest.Faults{RefuseStartup: true})
	r.writeConfig(t, `"Replica"`)
	cfg := r.cfg
	// Keep the test short: the retry schedule is exercised in internal/pageserver.
	cfg.BasebackupAttempts = 2
	err := Prepare(context.Background(), cfg, r.deps)
	if err == nil || !strings.Contains(err.Error(), "basebackup") {
		t.Fatalf("err %v", err)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || strings.Contains(*rec.Error, testToken) {
		t.Fatalf("status %s error %v", rec.Status, rec.Error)
	}
}

func TestLeaseLSNStatic(t *testing.T) {
	// The fake grants the first lease for 2 s and refuses the renewal (due after 1 s).
	var mu sync.Mutex
	calls := 0
	r := newNeonRigWith(t, func(c *pageservertest.Options) {
		c.ValidUntil = func(tenant, timeline, lsn string) *string {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls > 1 {
				return nil
			}
			v := strconv.FormatInt(time.Now().Add(2*time.Second).UnixMilli(), 10)
			return &v
		}
	})
	r.writeConfig(t, `{"Static": "0/16B5A50"}`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := LeaseLSN(ctx, r.cfg, r.deps)
	if err == nil || !strings.Contains(err.Error(), "not granted") {
		t.Fatalf("LeaseLSN = %v", err)
	}
	var leases []string
	for _, q := range r.ps.Queries() {
		if strings.HasPrefix(q, "lease lsn") {
			leases = append(leases, q)
		}
	}
	if len(leases) != 2 || leases[0] != "lease lsn "+testTenant+" "+testTimeline+" 0/16B5A50 " {
		t.Fatalf("lease queries %q", leases)
	}
}

func TestLeaseLSNNotStatic(t *testing.T) {
	r := newNeonRig(t)
	r.writeConfig(t, `"Replica"`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	if err := LeaseLSN(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatalf("LeaseLSN on a replica = %v, want a quiet exit", err)
	}
}

// TestPostgresUnitReadsTheStorageToken runs the ExecStart= line of
// compute-postgres.service (the shell, as systemd would, with a shim for postgres) and
// checks that the storage token compute-init writes reaches Postgres as NEON_AUTH_TOKEN,
// and that without the file there is none.
func TestPostgresUnitReadsTheStorageToken(t *testing.T) {
	unit, err := os.ReadFile("../../units/compute-postgres.service")
	if err != nil {
		t.Fatal(err)
	}
	var script string
	for _, l := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStart=/bin/sh -c '"); ok {
			script = strings.ReplaceAll(strings.TrimSuffix(rest, "'"), "$$", "$")
		}
	}
	if script == "" || strings.Contains(string(unit), "EnvironmentFile=-/run") {
		t.Fatalf("unexpected unit file:\n%s", unit)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	shim := filepath.Join(dir, "postgres")
	if err := os.WriteFile(shim, []byte("#!/bin/sh\nprintf 'token=%s args=%s\\n' \"$NEON_AUTH_TOKEN\" \"$*\" >\""+out+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Settings{StateDir: filepath.Join(dir, "state")}
	if err := os.Mkdir(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		t.Helper()
		if _, err := execx.Run(context.Background(), execx.Cmd{Path: "/bin/sh", Args: []string{"-c", script},
			Env: []string{"COMPUTE_STATE_DIR=" + cfg.StateDir, "PGBIN=" + shim, "PGDATA=/pgdata"}}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if err := writeNeonAuthToken(cfg, testToken); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != "token="+testToken+" args=-D /pgdata" {
		t.Errorf("with the token file: %q", got)
	}
	if err := writeNeonAuthToken(cfg, ""); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != "token= args=-D /pgdata" {
		t.Errorf("without the token file: %q", got)
	}
	if err := writeNeonAuthToken(cfg, "a\nNEON_OTHER=b"); err == nil {
		t.Error("a token with a line break was written")
	}
}

// A stalled pageserver fails the start after the idle timeout and the attempts, with the
// stall in the status; safekeepers that never agree (a --sync-safekeepers that does not
// finish) fail it after the sync timeout.
func TestPrepareNeonStalls(t *testing.T) {
	t.Run("pageserver", func(t *testing.T) {
		r := newNeonRig(t)
		r.ps.SetFaults(pageservertest.Faults{Stall: true, StallAfterBytes: 1000})
		r.writeConfig(t, `"Replica"`)
		cfg := r.cfg
		cfg.BasebackupAttempts, cfg.PageserverIdleTimeout = 2, 300*time.Millisecond
		if err := Prepare(context.Background(), cfg, r.deps); err == nil {
			t.Fatal("Prepare succeeded against a stalled pageserver")
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "pageserver stalled: no data for 300ms") ||
			!strings.Contains(*rec.Error, "after 2 attempts") {
			t.Fatalf("status %s error %v", rec.Status, deref(rec.Error))
		}
	})
	t.Run("safekeepers", func(t *testing.T) {
		r := newNeonRig(t)
		sktest.SetShimHang(t, r.shim, true)
		r.writeConfig(t, `"Primary"`)
		cfg := r.cfg
		cfg.SyncSafekeepersTimeout = 300 * time.Millisecond
		if err := Prepare(context.Background(), cfg, r.deps); err == nil {
			t.Fatal("Prepare succeeded with a hanging --sync-safekeepers")
		}
		rec, _ := r.store.Load()
		if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "no answer within 300ms") ||
			strings.Contains(*rec.Error, testToken) {
			t.Fatalf("status %s error %v", rec.Status, deref(rec.Error))
		}
		if r.ps.Basebackups() != 0 {
			t.Error("a basebackup was asked for without an LSN")
		}
	})
}

// A --sync-safekeepers that fails at start is run again (compute_ctl main's retries): two
// transient failures, then the LSN, and the basebackup at that LSN.
func TestPrepareNeonRetriesSyncSafekeepers(t *testing.T) {
	r := newNeonRig(t)
	sktest.SetShimFailTimes(t, r.shim, 2)
	r.writeConfig(t, `"Primary"`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	if n := sktest.ShimSyncCalls(t, r.shim); n != 3 {
		t.Errorf("--sync-safekeepers ran %d times, want 3", n)
	}
	if q := r.ps.Queries(); len(q) != 1 || !strings.Contains(q[0], " 0/2A3B4C8 --gzip") {
		t.Errorf("pageserver queries %q", q)
	}
}
