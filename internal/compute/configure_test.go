package compute

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/lfc/lfctest"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/logx/logxtest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// configureRig is compute-configure's world at a first start: a real PostgreSQL 15 as the
// compute's Postgres, and a state record at init with the config prepare handed over.
type configureRig struct {
	pg    *pgtest.Instance
	cfg   Settings
	deps  *Deps
	store *state.Store
}

// newConfigureRig starts Postgres; with halted, it is stopped again before prepare
// "finishes", as when compute-configure starts beside compute-postgres.
func newConfigureRig(t *testing.T, halted bool) *configureRig {
	t.Helper()
	r := &configureRig{pg: pgtest.Start(t)}
	if halted {
		r.pg.Halt(t)
	}
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	r.store, r.deps = st, &Deps{Store: st}
	r.cfg = Settings{StateDir: st.Dir(), PGData: r.pg.DataDir, Connstr: r.pg.Connstr(), PrivilegedRole: "neon_superuser"}
	body := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {
	  "roles": [{"name": "alice", "encrypted_password": null, "options": null}],
	  "databases": [{"name": "appdb", "owner": "alice", "options": null}]}}}`
	if err := os.WriteFile(paths.AppliedConfigFile(st.Dir()), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// A running Postgres was started before now: prepare finished a second earlier, as
	// the pid file has second resolution.
	done := time.Now().Add(-time.Second)
	if !halted {
		done = time.Now().Add(-time.Minute)
	}
	if _, err := statetest.Set(st, state.Init, func(rec *state.Record) { rec.PrepareDoneAt = &done }); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *configureRig) configureAsync() <-chan error {
	done := make(chan error, 1)
	go func() { done <- Configure(context.Background(), r.cfg, r.deps) }()
	return done
}

func (r *configureRig) hasDatabase(t *testing.T, name string) bool {
	t.Helper()
	c, err := pgx.Connect(context.Background(), r.pg.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var ok bool
	if err := c.QueryRow(context.Background(), "select exists (select 1 from pg_database where datname = $1)", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestFirstConfigureRunningPostgres(t *testing.T) {
	r := newConfigureRig(t, false)
	log, logged := logxtest.NewRecorder()
	r.deps.Log = log
	if err := <-r.configureAsync(); err != nil {
		t.Fatal(err)
	}
	// The running milestone, once, with its MESSAGE_ID (`journalctl MESSAGE_ID=...`).
	if n, lv := logged.Milestones(); n[logx.MsgRunning] != 1 || lv[logx.MsgRunning] != slog.LevelInfo || len(n) != 1 {
		t.Errorf("milestones %v, want one %s at info", n, logx.MsgRunning)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Running || rec.MigrationID == 0 {
		t.Errorf("status %s, migration id %d", rec.Status, rec.MigrationID)
	}
	if rec.Metrics.TotalStartupMs < rec.Metrics.ConfigMs {
		t.Errorf("total_startup_ms %d < config_ms %d", rec.Metrics.TotalStartupMs, rec.Metrics.ConfigMs)
	}
	if !r.hasDatabase(t, "appdb") {
		t.Error("the spec was not applied: no appdb")
	}
	// Subscribers are enabled, and Postgres was told (a reload).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := pgx.Connect(context.Background(), r.pg.Connstr())
		if err != nil {
			t.Fatal(err)
		}
		var v string
		err = c.QueryRow(context.Background(), "SELECT current_setting('neon.disable_logical_replication_subscribers', true)").Scan(&v)
		c.Close(context.Background())
		if err == nil && v == "false" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("neon.disable_logical_replication_subscribers = %q (%v) after the start", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// compute-configure starts beside compute-postgres: it waits for Postgres to accept
// connections, then applies the spec.
func TestFirstConfigureWaitsForPostgres(t *testing.T) {
	r := newConfigureRig(t, true)
	done := r.configureAsync()
	select {
	case err := <-done:
		t.Fatalf("configure returned before Postgres started: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if rec, _ := r.store.Load(); rec.Status != state.Init {
		t.Fatalf("status %s while Postgres is down", rec.Status)
	}
	r.pg.Resume(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("configure did not notice that Postgres came up")
	}
	if rec, _ := r.store.Load(); rec.Status != state.Running {
		t.Errorf("status %s", rec.Status)
	}
	if !r.hasDatabase(t, "appdb") {
		t.Error("the spec was not applied: no appdb")
	}
}

// Postgres fails to start: the stop hook records it, and configure gives up with that
// reason instead of waiting forever, leaving the recorded error as it is.
func TestFirstConfigureGivesUpWhenPostgresFails(t *testing.T) {
	r := newConfigureRig(t, true)
	log, logged := logxtest.NewRecorder()
	r.deps.Log = log
	done := r.configureAsync()
	const reason = "postgres exited with status 1: FATAL:  invalid value for parameter"
	time.Sleep(100 * time.Millisecond)
	if err := r.deps.as(state.ActorStopHook).fail(errors.New(reason)); err == nil {
		t.Fatal("fail returned nil")
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "postgres did not come up: the compute is failed: "+reason) {
			t.Errorf("configure: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("configure kept waiting after the compute failed")
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || rec.Error == nil || *rec.Error != reason {
		t.Errorf("status %s error %v", rec.Status, rec.Error)
	}
	// The stop hook's failure is the one failed milestone; configure giving up adds none.
	if n, lv := logged.Milestones(); n[logx.MsgFailed] != 1 || lv[logx.MsgFailed] != slog.LevelError || len(n) != 1 {
		t.Errorf("milestones %v, want one %s at error", n, logx.MsgFailed)
	}
	// Failing again (already failed) is no new occurrence.
	_ = r.deps.as(state.ActorConfigure).fail(errors.New("again"))
	if n, _ := logged.Milestones(); n[logx.MsgFailed] != 1 {
		t.Errorf("a second fail logged the milestone again: %v", n)
	}
}

type fakeUnitTimes struct {
	start time.Time
	err   error
}

func (f fakeUnitTimes) UnitTimestamps(context.Context, string) (time.Time, time.Time, error) {
	return f.start, time.Time{}, f.err
}

// start_postgres_ms runs from the unit's process start to when configure saw Postgres
// ready; a start time of an earlier lifecycle (or none) gives 0, not a wrong figure.
func TestPostgresStartTime(t *testing.T) {
	since := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	ready := since.Add(300 * time.Millisecond)
	for _, tc := range []struct {
		name string
		u    UnitTimes
		want uint64
	}{
		{"this lifecycle", fakeUnitTimes{start: since.Add(220 * time.Millisecond)}, 80},
		{"an earlier lifecycle", fakeUnitTimes{start: since.Add(-time.Minute)}, 0},
		{"never started", fakeUnitTimes{}, 0},
		{"after ready (clock trouble)", fakeUnitTimes{start: ready.Add(time.Millisecond)}, 0},
		{"systemd unreachable", fakeUnitTimes{err: errors.New("no bus")}, 0},
		{"no systemd at all", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := <-postgresStartTime(context.Background(), &Deps{Units: tc.u}, since, ready); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// Every control-plane request is counted in the record for compute_ctl_cplane_requests_total,
// failed ones included.
func TestPrepareCountsControlPlaneRequests(t *testing.T) {
	var n atomic.Int32
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		http.Error(w, "no such compute", http.StatusNotFound)
	}))
	defer cp.Close()
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Settings{StateDir: st.Dir(), PGData: filepath.Join(t.TempDir(), "pgdata"), Connstr: paths.DefaultConnstr,
		ControlPlaneURI: cp.URL, ComputeID: "c1"}
	err = Prepare(context.Background(), cfg, &Deps{Store: st})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Prepare = %v, want the 404 from the control plane", err)
	}
	rec, _ := st.Load()
	got := rec.Counters.CplaneRequests["GetConfig"]
	if len(got) != 2 || got["503 Service Unavailable"] != 2 || got["404 Not Found"] != 1 {
		t.Errorf("counted %v", rec.Counters.CplaneRequests)
	}
	if rec.Status != state.Failed {
		t.Errorf("status %s", rec.Status)
	}
}

// syncLog is a text log written from several goroutines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFirstConfigureUpdatesNeonExtension: a primary's start runs `ALTER EXTENSION neon
// UPDATE` (compute_ctl's post_apply_config) when the extension is installed, and its
// failure is logged, never fatal. The stand-in extension has no control file in the
// share directory, so the update reaches Postgres and fails there ("not available").
func TestFirstConfigureUpdatesNeonExtension(t *testing.T) {
	r := newConfigureRig(t, false)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, r.pg.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	if err := lfctest.Install(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	logs := &syncLog{}
	r.deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	if err := <-r.configureAsync(); err != nil {
		t.Fatalf("a failed neon update failed the start: %v", err)
	}
	if rec, _ := r.store.Load(); rec.Status != state.Running {
		t.Errorf("status %s, want running", rec.Status)
	}
	out := logs.String()
	if !regexp.MustCompile(`level=ERROR msg="update extension neon" err=.*is not available \(SQLSTATE 0A000\)`).MatchString(out) {
		t.Errorf("no failed ALTER EXTENSION neon UPDATE logged:\n%s", out)
	}
}

// TestFirstConfigureSkipsNeonUpdateWithoutExtension: no neon extension, no update (vanilla
// PostgreSQL), said in the log.
func TestFirstConfigureSkipsNeonUpdateWithoutExtension(t *testing.T) {
	r := newConfigureRig(t, false)
	logs := &syncLog{}
	r.deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	if err := <-r.configureAsync(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `msg="extension neon not installed: no update"`) || strings.Contains(out, "level=ERROR") {
		t.Errorf("log:\n%s", out)
	}
}
