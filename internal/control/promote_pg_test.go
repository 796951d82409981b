package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// replicaConfig is the applied config of a standalone replica; the role exists only once
// the spec has been applied as a primary's.
const replicaConfig = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0,
  "suspend_timeout_seconds": -1, "mode": "Replica", "cluster": {
  "roles": [{"name": "after_promotion", "encrypted_password": null, "options": null}],
  "databases": []}}}`

// promoteRig is a real primary, a real standby made from it with pg_basebackup, a state
// record that says a running standalone replica, and a controller whose configure unit
// is the real configure step (compute.Configure, in this process).
type promoteRig struct {
	*rig
	primary, standby *pgtest.Instance
	settings         compute.Settings
	pc               *pgx.Conn
	// logs has the log lines of the controller and of the configure step, which log
	// from their own goroutines.
	logs *lockedBuffer
}

// lockedBuffer is a log sink for several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newPromoteRig(t *testing.T, po promote.Options) *promoteRig {
	t.Helper()
	return newPromoteRigFor(t, po, replicaConfig, spec.StorageStandalone)
}

// newPromoteRigFor is newPromoteRig with the applied config cfg and the storage mode the
// record says; in neon mode the servers know neon.safekeepers as a placeholder (the neon
// extension defines it for real).
func newPromoteRigFor(t *testing.T, po promote.Options, cfg string, storage spec.StorageMode) *promoteRig {
	t.Helper()
	var opts []pgtest.Option
	if storage == spec.StorageNeon {
		opts = append(opts, pgtest.WithSetting("neon.safekeepers", ""))
	}
	primary := pgtest.Start(t, opts...)
	standby := pgtest.StartStandby(t, primary, opts...)
	pr := &promoteRig{primary: primary, standby: standby, logs: &lockedBuffer{}}
	log := slog.New(slog.NewTextHandler(pr.logs, nil))
	pr.rig = newRig(t, func(d *Deps) {
		d.Logger = log
		po.Connstr = standby.Connstr()
		po.Logger = d.Logger
		d.Promoter = promote.New(po)
	})
	dir := pr.store.Dir()
	pr.settings = compute.Settings{StateDir: dir, PGData: standby.DataDir, Connstr: standby.Connstr(), PrivilegedRole: "neon_superuser"}
	pr.ctl.cfg.WritePendingConfig = func(raw []byte) error { return os.WriteFile(paths.PendingConfigFile(dir), raw, 0o600) }
	pr.ctl.cfg.ReadAppliedConfig = func() ([]byte, error) { return os.ReadFile(paths.AppliedConfigFile(dir)) }
	pr.units.reconfigure = func() error {
		return compute.Configure(context.Background(), pr.settings, &compute.Deps{Store: pr.store, Log: log})
	}
	if err := os.WriteFile(paths.AppliedConfigFile(dir), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pr.set(state.Running, func(r *state.Record) {
		r.Mode = spec.ModeTypeReplica
		r.Storage = storage
		if storage == spec.StorageNeon {
			// compute-monitor's autoprewarm found no state: the promotion may go on.
			r.LFC = &lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}}
		}
	})
	var err error
	if pr.pc, err = pgx.Connect(context.Background(), primary.Connstr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.pc.Close(context.Background()) })
	pr.exec(pr.pc, "CREATE TABLE promoted (id int)")
	return pr
}

func (pr *promoteRig) exec(c *pgx.Conn, sql string) {
	pr.t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		pr.t.Fatalf("%s: %v", sql, err)
	}
}

// flushLSN is the primary's WAL flush LSN.
func (pr *promoteRig) flushLSN() spec.Lsn {
	pr.t.Helper()
	var s string
	if err := pr.pc.QueryRow(context.Background(), "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		pr.t.Fatal(err)
	}
	l, err := spec.ParseLsn(s)
	if err != nil {
		pr.t.Fatal(err)
	}
	return l
}

func (pr *promoteRig) inRecovery() bool {
	pr.t.Helper()
	c, err := pgx.Connect(context.Background(), pr.standby.Connstr())
	if err != nil {
		pr.t.Fatal(err)
	}
	defer c.Close(context.Background())
	var b bool
	if err := c.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&b); err != nil {
		pr.t.Fatal(err)
	}
	return b
}

func (pr *promoteRig) reconfigures() int {
	pr.units.mu.Lock()
	defer pr.units.mu.Unlock()
	return pr.units.reconfigures
}

type outcome struct {
	st  promotestate.State
	err error
}

// A standby made with pg_basebackup waits for the LSN the primary reaches only later,
// is promoted, takes writes, and its config says primary; every call that came while
// the promotion ran gets its outcome, a call whose client went away does not stop it,
// and a later call answers completed at once.
func TestPromoteRealStandby(t *testing.T) {
	pr := newPromoteRig(t, promote.Options{Interval: 20 * time.Millisecond, Retries: 1500})
	pr.exec(pr.pc, "INSERT INTO promoted SELECT generate_series(1, 100)")
	// An LSN the primary has not written yet: the promotion must wait for it.
	want := pr.flushLSN() + 256<<10
	req := promotestate.Request{Safekeepers: "sk1:5454,sk2:5454", WALFlushLSN: want}

	gone, goneCancel := context.WithCancel(context.Background())
	results := make(chan outcome, 4)
	var wg sync.WaitGroup
	go func() {
		st, err := pr.ctl.Promote(context.Background(), req)
		results <- outcome{st, err}
	}()
	// The first call has begun the promotion once the record says so.
	pr.waitPromotion(promotestate.PhasePromoting)
	for _, r := range []promotestate.Request{req, {Safekeepers: "other:1", WALFlushLSN: 1}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := pr.ctl.Promote(context.Background(), r)
			results <- outcome{st, err}
		}()
	}
	// A client that goes away gets its context's error; the promotion goes on.
	goneDone := make(chan error, 1)
	go func() {
		_, err := pr.ctl.Promote(gone, req)
		goneDone <- err
	}()
	goneCancel()
	if err := <-goneDone; !errors.Is(err, context.Canceled) {
		t.Errorf("a caller that went away: %v", err)
	}
	select {
	case o := <-results:
		t.Fatalf("a call answered before the standby caught up: %+v", o)
	default:
	}
	if !pr.inRecovery() {
		t.Fatal("promoted before the LSN was replayed")
	}

	// The primary writes past the LSN.
	for pr.flushLSN() < want {
		pr.exec(pr.pc, "INSERT INTO promoted SELECT generate_series(1, 2000)")
	}
	var n int
	if err := pr.pc.QueryRow(context.Background(), "SELECT count(*) FROM promoted").Scan(&n); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 0; i < 3; i++ {
		o := <-results
		if o.err != nil || o.st != (promotestate.State{Status: promotestate.Completed}) {
			t.Errorf("call %d: %+v, %v\n%s", i, o.st, o.err, pr.logs)
		}
	}
	if got := pr.reconfigures(); got != 1 {
		t.Errorf("%d reconfigurations, want one (the calls joined one promotion)", got)
	}

	// Promoted: out of recovery, every row of the primary there, and it takes writes.
	if pr.inRecovery() {
		t.Fatal("still in recovery")
	}
	sc, err := pgx.Connect(context.Background(), pr.standby.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(context.Background())
	var m int
	if err := sc.QueryRow(context.Background(), "SELECT count(*) FROM promoted").Scan(&m); err != nil || m != n {
		t.Errorf("rows on the promoted standby %d (%v), want %d", m, err, n)
	}
	pr.exec(sc, "INSERT INTO promoted VALUES (-1)")
	// The configure step applied the spec as a primary's.
	var role bool
	if err := sc.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'after_promotion')").Scan(&role); err != nil || !role {
		t.Errorf("the spec's role after the promotion: %v (%v)", role, err)
	}

	// The config says primary: the applied config, postgresql.conf, the record.
	applied, err := os.ReadFile(paths.AppliedConfigFile(pr.store.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	l, err := spec.Load(applied)
	if err != nil {
		t.Fatal(err)
	}
	if !l.ComputeSpec().Mode.IsPrimary() || strings.Join(l.ComputeSpec().SafekeeperConnstrings, ",") != req.Safekeepers {
		t.Errorf("applied spec: mode %s, safekeepers %q", l.ComputeSpec().Mode, l.ComputeSpec().SafekeeperConnstrings)
	}
	conf, err := os.ReadFile(filepath.Join(pr.standby.DataDir, "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"neon.compute_mode=primary", "neon.safekeepers='sk1:5454,sk2:5454'"} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("postgresql.conf lacks %q:\n%s", line, conf)
		}
	}
	if strings.Contains(string(conf), "hot_standby=on") || strings.Contains(string(conf), "neon.compute_mode=replica") {
		t.Errorf("postgresql.conf still a replica's:\n%s", conf)
	}
	rec, err := pr.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != state.Running || rec.Mode != spec.ModeTypePrimary || rec.Promotion == nil ||
		rec.Promotion.Phase != promotestate.PhaseCompleted || rec.Promotion.Request != req || rec.Promotion.EndedAt == nil {
		t.Errorf("record: %s, mode %s, promotion %+v", rec.Status, rec.Mode, rec.Promotion)
	}
	if !strings.Contains(pr.logs.String(), "MESSAGE_ID=5cd6ab55fef5421b9d9063b6f674ef74") {
		t.Errorf("no promoted milestone in the log:\n%s", pr.logs)
	}

	// A later call, whatever it asks, answers completed at once, as compute_ctl.
	st, err := pr.ctl.Promote(context.Background(), promotestate.Request{Safekeepers: "x:1", WALFlushLSN: 1 << 40})
	if err != nil || st.Status != promotestate.Completed || pr.reconfigures() != 1 {
		t.Errorf("a later call: %+v, %v, %d reconfigurations", st, err, pr.reconfigures())
	}
}

func (pr *promoteRig) waitPromotion(ph promotestate.Phase) state.Record {
	pr.t.Helper()
	wake, cancel := pr.waker.Subscribe()
	defer cancel()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	rec, err := pr.store.Wait(ctx, wake, 20*time.Millisecond, func(r state.Record) bool {
		return r.Promotion != nil && r.Promotion.Phase == ph
	})
	if err != nil {
		pr.t.Fatalf("wait for promotion %s: %v (record %+v)", ph, err, rec.Promotion)
	}
	return rec
}

// An LSN that never arrives: a bounded wait, a clear failure, the record says failed and
// the standby is still one; the next call tries again (compute_ctl would answer the old
// failure for good) and succeeds.
func TestPromoteLSNNeverArrives(t *testing.T) {
	looks := 0
	pr := newPromoteRig(t, promote.Options{Retries: 3, Sleep: func(ctx context.Context, _ time.Duration) error {
		looks++
		return ctx.Err()
	}})
	want := pr.flushLSN() + 1<<30
	st, err := pr.ctl.Promote(context.Background(), promotestate.Request{Safekeepers: "sk:1", WALFlushLSN: want})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != promotestate.Failed || !strings.HasPrefix(st.Error, "didn't catch up with primary in 3 retries: replayed up to ") ||
		!strings.HasSuffix(st.Error, "wal_flush_lsn "+want.String()) || looks != 3 {
		t.Errorf("outcome %+v after %d waits", st, looks)
	}
	rec, _ := pr.store.Load()
	if rec.Status != state.Running || rec.Mode != spec.ModeTypeReplica || rec.Promotion == nil ||
		rec.Promotion.Phase != promotestate.PhaseFailed || rec.Promotion.Error != st.Error {
		t.Errorf("record: %s, mode %s, promotion %+v", rec.Status, rec.Mode, rec.Promotion)
	}
	if !pr.inRecovery() || pr.reconfigures() != 0 {
		t.Errorf("in recovery %v, %d reconfigurations after a failed wait", pr.inRecovery(), pr.reconfigures())
	}

	// Once the LSN has been replayed (the primary's current one, waited for with real
	// sleeps), a new call promotes.
	pr.ctl.cfg.Promoter = promote.New(promote.Options{Connstr: pr.standby.Connstr(), Interval: 20 * time.Millisecond, Retries: 1500})
	st, err = pr.ctl.Promote(context.Background(), promotestate.Request{Safekeepers: "sk:1", WALFlushLSN: pr.flushLSN()})
	if err != nil || st.Status != promotestate.Completed {
		t.Fatalf("retry: %+v, %v\n%s", st, err, pr.logs)
	}
	if pr.inRecovery() {
		t.Error("still in recovery after the retry")
	}
}

// The neon-mode path on vanilla PostgreSQL: neon.safekeepers set with ALTER SYSTEM before
// pg_promote, the config rewritten as a neon primary's (the generation kept in
// neon.safekeepers), the ALTER SYSTEM setting reset afterwards. The catalog apply is
// skipped (skip_pg_catalog_updates: it needs the neon extension).
func TestPromoteRealStandbyNeon(t *testing.T) {
	cfg := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0,
	  "suspend_timeout_seconds": -1, "mode": "Replica", "skip_pg_catalog_updates": true,
	  "pageserver_connstring": "postgresql://ps:6400", "tenant_id": "` + testTenant + `", "timeline_id": "` + testTimeline + `",
	  "cluster": {"roles": [], "databases": []}}}`
	pr := newPromoteRigFor(t, promote.Options{Interval: 20 * time.Millisecond, Retries: 1500}, cfg, spec.StorageNeon)
	probe := &autoConfProbe{Promoter: pr.ctl.cfg.Promoter, pgdata: pr.standby.DataDir}
	pr.ctl.cfg.Promoter = probe
	req := promotestate.Request{Safekeepers: "g#3:sk-0:5454,sk-1:5454", WALFlushLSN: pr.flushLSN()}
	st, err := pr.ctl.Promote(context.Background(), req)
	if err != nil || st.Status != promotestate.Completed {
		t.Fatalf("%+v, %v\n%s", st, err, pr.logs)
	}
	if pr.inRecovery() {
		t.Fatal("still in recovery")
	}
	conf, err := os.ReadFile(filepath.Join(pr.standby.DataDir, "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"neon.compute_mode=primary", "neon.safekeepers='g#3:sk-0:5454,sk-1:5454'", "neon.pageserver_connstring='postgresql://ps:6400'"} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("postgresql.conf lacks %q:\n%s", line, conf)
		}
	}
	auto, err := os.ReadFile(filepath.Join(pr.standby.DataDir, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(auto), "neon.safekeepers") {
		t.Errorf("postgresql.auto.conf keeps the promotion's setting:\n%s", auto)
	}
	if want := "neon.safekeepers = 'g#3:sk-0:5454,sk-1:5454'"; !strings.Contains(probe.autoAtPromote, want) {
		t.Errorf("postgresql.auto.conf right after pg_promote lacks %q:\n%s", want, probe.autoAtPromote)
	}
	rec, _ := pr.store.Load()
	if rec.Status != state.Running || rec.Mode != spec.ModeTypePrimary || !rec.NeedsFinalSync() {
		t.Errorf("record %s %s, final sync %v", rec.Status, rec.Mode, rec.NeedsFinalSync())
	}
}

// autoConfProbe is the real Promoter, and reads postgresql.auto.conf as it is right after
// the promotion (before the config rewrite resets the setting).
type autoConfProbe struct {
	Promoter
	pgdata        string
	autoAtPromote string
}

func (p *autoConfProbe) Promote(ctx context.Context, req promotestate.Request, run promote.Run) (promote.Result, error) {
	res, err := p.Promoter.Promote(ctx, req, run)
	b, _ := os.ReadFile(filepath.Join(p.pgdata, "postgresql.auto.conf"))
	p.autoAtPromote = string(b)
	return res, err
}

func TestMain(m *testing.M) { pgtest.Main(m) }

// promotedConfigJSON decodes PromotedConfig's spec.
func promotedSpec(t *testing.T, raw []byte) map[string]json.RawMessage {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	var sp map[string]json.RawMessage
	if err := json.Unmarshal(top["spec"], &sp); err != nil {
		t.Fatal(err)
	}
	return sp
}
