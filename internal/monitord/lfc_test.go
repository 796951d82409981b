package monitord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"

	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/lfc/lfctest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const (
	lfcTenant   = "0123456789abcdef0123456789abcdef"
	lfcTimeline = "fedcba9876543210fedcba9876543210"
	lfcEndpoint = "ep-test-1"
	lfcToken    = "storage-secret-token"
)

var lfcDBSeq atomic.Int64

// lfcRig runs the monitor against a real PostgreSQL 15 database with the stand-in neon
// extension, and the fake endpoint storage named in the applied config.
type lfcRig struct {
	t       *testing.T
	store   *state.Store
	waker   *statetest.Waker
	lfc     *LFC
	ctl     lfctest.Control
	storage *lfctest.Storage
	changed atomic.Int64
	connstr string
}

// rigOptions configure newLFCRig.
type rigOptions struct {
	pg          func(connstr string) LFCPostgres // nil: lfc.PG
	autoprewarm bool
	interval    uint64              // offload_lfc_interval_seconds
	seed        func(*state.Record) // applied to the running record before Run
	noNeon      bool                // do not install the stand-in neon extension
	before      func(*lfcRig)       // runs before Run (storage mode, a query to orphan)
}

func newLFCRig(t *testing.T, o rigOptions) *lfcRig {
	t.Helper()
	autoprewarm, interval, seed := o.autoprewarm, o.interval, o.seed
	inst := pgtest.Shared(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	db := fmt.Sprintf("monitord_lfc_%d", lfcDBSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	conn, err := pgx.Connect(ctx, inst.ConnstrDB(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if !o.noNeon {
		if err := lfctest.Install(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}

	r := &lfcRig{t: t, waker: &statetest.Waker{}, lfc: NewLFC(), ctl: lfctest.Control{Conn: conn}, storage: lfctest.NewStorage(t)}
	dir := t.TempDir()
	r.store, err = state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r.store.OnChange = func(state.Record) { r.waker.Notify() }
	sp := map[string]any{
		"format_version": 1.0, "suspend_timeout_seconds": -1,
		"cluster":   map[string]any{"roles": []any{}, "databases": []any{}},
		"tenant_id": lfcTenant, "timeline_id": lfcTimeline, "endpoint_id": lfcEndpoint,
		"endpoint_storage_addr": r.storage.Addr(), "endpoint_storage_token": lfcToken,
		"autoprewarm": autoprewarm,
	}
	if interval > 0 {
		sp["offload_lfc_interval_seconds"] = interval
	}
	raw, err := json.Marshal(map[string]any{"spec": sp, "compute_ctl_config": map[string]any{"jwks": map[string]any{"keys": []any{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.AppliedConfigFile(dir), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	statetest.MustSet(t, r.store, state.Running, seed)
	r.connstr = inst.ConnstrDB(db)
	if o.before != nil {
		o.before(r)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Settings{StateDir: dir, Connstr: inst.ConnstrDB(db), Recheck: 100 * time.Millisecond, LFCTick: 20 * time.Millisecond},
			Deps{Store: r.store, Subscribe: r.waker.Subscribe, LFC: r.lfc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), LFCPostgres: pgOf(o, r.connstr),
				LFCChanged: func(uint64) { r.changed.Add(1) }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// monitoring waits until the monitor took the running lifecycle.
func (r *lfcRig) monitoring() {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.lfc.current() == nil {
		if time.Now().After(deadline) {
			r.t.Fatal("the monitor did not take the running compute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *lfcRig) lfcState() lfcstate.States {
	r.t.Helper()
	rec, err := r.store.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	if rec.LFC == nil {
		return lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmNotPrewarmed}, Offload: lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded}}
	}
	return *rec.LFC
}

func (r *lfcRig) waitLFC(what string, cond func(lfcstate.States) bool) lfcstate.States {
	r.t.Helper()
	var last lfcstate.States
	waitRecord(r.t, r.store, what, func(rec state.Record) bool {
		if rec.LFC == nil {
			return false
		}
		last = *rec.LFC
		return cond(last)
	})
	return last
}

func refusal(err error) lfcstate.Refusal {
	var le *lfcstate.RefusedError
	if errors.As(err, &le) {
		return le.Refusal
	}
	return 0
}

func zstdOf(t *testing.T, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func TestLFCRefusedBeforeRunning(t *testing.T) {
	l := NewLFC()
	if err := l.Prewarm(""); refusal(err) != lfcstate.RefusedNotRunning {
		t.Errorf("prewarm without a running compute = %v", err)
	}
	if err := l.Offload(); refusal(err) != lfcstate.RefusedNotRunning {
		t.Errorf("offload without a running compute = %v", err)
	}
	if ok, err := l.CancelPrewarm(); ok || err != nil {
		t.Errorf("cancel without a running compute = %v, %v", ok, err)
	}
	if err := l.Prewarm("../other"); refusal(err) != lfcstate.RefusedInvalid {
		t.Errorf("prewarm from ../other = %v, want invalid", err)
	}
}

// The methods the API calls, against real Postgres and the fake endpoint storage: each
// change is in the record when the method returns, the refusals are the API's 429s, the
// progress of a running prewarm is published, a cancel ends it cancelled, and leaving
// running ends what runs.
func TestLFCMethodsPublishIntoTheRecord(t *testing.T) {
	r := newLFCRig(t, rigOptions{})
	ctx := context.Background()
	r.monitoring()
	if rec, _ := r.store.Load(); rec.LFC != nil {
		t.Fatalf("a record written before any LFC change: %+v", rec.LFC)
	}

	// Offload: in the record as soon as it is taken, then completed and stored.
	content := bytes.Repeat([]byte("lfc-state-"), 3000)
	if err := r.ctl.SetState(ctx, content); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Offload(); err != nil {
		t.Fatalf("offload: %v", err)
	}
	if st := r.lfcState(); st.Offload.Status != lfcstate.OffloadOffloading && st.Offload.Status != lfcstate.OffloadCompleted {
		t.Fatalf("record right after the offload was taken: %+v", st.Offload)
	}
	r.waitLFC("offload completed", func(s lfcstate.States) bool { return s.Offload.Status == lfcstate.OffloadCompleted })
	key := "/" + lfcTenant + "/" + lfcTimeline + "/" + lfcEndpoint + "/" + lfc.Key
	if body, ok := r.storage.Object(key); !ok || !bytes.Equal(body, zstdOf(t, content)) {
		t.Fatalf("stored object at %s: %d bytes, found %v", key, len(body), ok)
	}
	for _, req := range r.storage.Requests() {
		if req.Authorization != "Bearer "+lfcToken {
			t.Errorf("request %s %s without the token", req.Method, req.Path)
		}
	}

	// Prewarm: prewarming in the record at once, progress published, refusals while it
	// runs, completed with the state loaded into Postgres.
	if err := r.ctl.PrewarmSleep(ctx, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := r.ctl.SetProgress(ctx, 100, 40, 2); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatalf("prewarm: %v", err)
	}
	if st := r.lfcState(); st.Prewarm.Status != lfcstate.PrewarmPrewarming {
		t.Fatalf("record right after the prewarm was taken: %+v", st.Prewarm)
	}
	if err := r.lfc.Prewarm(""); refusal(err) != lfcstate.RefusedBusy || err.Error() != lfc.MsgPrewarmRunning {
		t.Errorf("second prewarm = %v", err)
	}
	if err := r.lfc.Offload(); refusal(err) != lfcstate.RefusedBusy || !strings.Contains(err.Error(), "prewarm is in progress") {
		t.Errorf("offload during a prewarm = %v", err)
	}
	r.waitLFC("progress published", func(s lfcstate.States) bool {
		return s.Prewarm.Status == lfcstate.PrewarmPrewarming && s.Prewarm.Progress == lfcstate.Progress{Total: 100, Prewarmed: 40, Skipped: 2}
	})
	st := r.waitLFC("prewarm completed", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmCompleted })
	if got, calls, err := r.ctl.LastPrewarmed(ctx); err != nil || calls != 1 || !bytes.Equal(got, content) {
		t.Errorf("prewarmed %d bytes in %d calls (%v), want the offloaded state", len(got), calls, err)
	}
	rec, _ := r.store.Load()
	if c := rec.Counters.LFC; c.Prewarms != 1 || c.Offloads != 1 || c.PrewarmErrors != 0 || c.OffloadErrors != 0 {
		t.Errorf("counters = %+v", c)
	}
	// One signal per write: at least the four changes (offloading, completed, prewarming,
	// completed), plus the progress writes.
	if n := r.changed.Load(); n < 4 {
		t.Errorf("%d Changed signals for seq %d", n, st.Seq)
	}

	// A from_endpoint that is not an endpoint id is refused before anything runs.
	if err := r.lfc.Prewarm("a/../b"); refusal(err) != lfcstate.RefusedInvalid {
		t.Errorf("prewarm from a/../b = %v", err)
	}

	// Cancel: the running prewarm ends cancelled.
	if err := r.ctl.PrewarmSleep(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatal(err)
	}
	r.waitLFC("prewarming", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmPrewarming })
	time.Sleep(200 * time.Millisecond) // let the query start in Postgres
	if ok, err := r.lfc.CancelPrewarm(); !ok || err != nil {
		t.Fatalf("cancel = %v, %v", ok, err)
	}
	r.waitLFC("prewarm cancelled", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmCancelled })

	// Leaving running ends a running prewarm and the methods refuse again.
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatal(err)
	}
	r.waitLFC("prewarming again", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmPrewarming })
	statetest.MustSet(t, r.store, state.TerminationPendingFast, nil)
	r.waker.Notify()
	end := r.waitLFC("prewarm ended by the termination", func(s lfcstate.States) bool { return s.Prewarm.Status != lfcstate.PrewarmPrewarming })
	if end.Prewarm.Status == lfcstate.PrewarmCompleted {
		t.Errorf("a prewarm cut short recorded %+v", end.Prewarm)
	}
	deadline := time.Now().Add(10 * time.Second)
	for refusal(r.lfc.Prewarm("")) != lfcstate.RefusedNotRunning {
		if time.Now().After(deadline) {
			t.Fatal("prewarm still taken after the compute left running")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// autoprewarm right after running (a first start: endpoint storage has no state, so the
// prewarm is skipped), then the periodic offload stores the state.
func TestLFCAutoprewarmAndPeriodicOffload(t *testing.T) {
	r := newLFCRig(t, rigOptions{autoprewarm: true, interval: 1})
	ctx := context.Background()
	content := bytes.Repeat([]byte("warm"), 5000)
	if err := r.ctl.SetState(ctx, content); err != nil {
		t.Fatal(err)
	}
	r.waitLFC("autoprewarm skipped", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmSkipped })
	r.waitLFC("periodic offload", func(s lfcstate.States) bool { return s.Offload.Status == lfcstate.OffloadCompleted })
	key := "/" + lfcTenant + "/" + lfcTimeline + "/" + lfcEndpoint + "/" + lfc.Key
	if body, ok := r.storage.Object(key); !ok || !bytes.Equal(body, zstdOf(t, content)) {
		t.Fatalf("periodic offload stored %d bytes (found %v)", len(body), ok)
	}
}

// A failed prewarm stops the periodic offload (its incomplete state must not be uploaded).
func TestLFCNoPeriodicOffloadAfterAFailedPrewarm(t *testing.T) {
	r := newLFCRig(t, rigOptions{autoprewarm: true, interval: 1, before: func(r *lfcRig) {
		if err := r.ctl.SetState(context.Background(), []byte("partial")); err != nil {
			t.Fatal(err)
		}
		r.storage.SetMode(lfctest.ServerError)
	}})
	st := r.waitLFC("autoprewarm failed", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmFailed })
	if !strings.Contains(st.Prewarm.Error, "500") {
		t.Errorf("prewarm error = %q", st.Prewarm.Error)
	}
	r.storage.SetMode(lfctest.OK)
	time.Sleep(2500 * time.Millisecond) // two periodic ticks
	if st := r.lfcState(); st.Offload.Status != lfcstate.OffloadNotOffloaded {
		t.Fatalf("periodic offload after a failed prewarm: %+v", st.Offload)
	}
	for _, req := range r.storage.Requests() {
		if req.Method == "PUT" {
			t.Fatalf("uploaded after a failed prewarm: %+v", req.Path)
		}
	}
	// The operator's way out: a manual offload is allowed.
	if err := r.lfc.Offload(); err != nil {
		t.Fatalf("manual offload after a failed prewarm: %v", err)
	}
	r.waitLFC("manual offload", func(s lfcstate.States) bool { return s.Offload.Status == lfcstate.OffloadCompleted })
}

// A monitor restarted during a prewarm records it failed (interrupted) and counts it.
func TestLFCRestoreInterrupted(t *testing.T) {
	orphan := make(chan error, 1)
	r := newLFCRig(t, rigOptions{
		seed: func(rec *state.Record) {
			rec.LFC = &lfcstate.States{Seq: 5, Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmPrewarming}, Offload: lfcstate.OffloadState{Status: lfcstate.OffloadCompleted}}
			rec.Counters.LFC = lfcstate.Counters{Prewarms: 3, Offloads: 2}
		},
		// The killed monitor's prewarm query, still running in Postgres.
		before: func(r *lfcRig) {
			ctx := context.Background()
			if err := r.ctl.PrewarmSleep(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
			go func() { orphan <- (lfc.PG{Connstr: r.connstr}).PrewarmLocalCache(ctx, []byte("old")) }()
			waitActive(t, r.ctl)
		},
	})
	st := r.waitLFC("interrupted prewarm recorded", func(s lfcstate.States) bool { return s.Seq > 5 })
	if st.Prewarm.Status != lfcstate.PrewarmFailed || st.Prewarm.Error != lfc.Interrupted || st.Offload.Status != lfcstate.OffloadCompleted {
		t.Errorf("restored %+v", st)
	}
	rec, _ := r.store.Load()
	if c := rec.Counters.LFC; c != (lfcstate.Counters{Prewarms: 3, PrewarmErrors: 1, Offloads: 2}) {
		t.Errorf("counters = %+v", c)
	}
	select {
	case err := <-orphan:
		if err == nil || !strings.Contains(err.Error(), "canceling statement") {
			t.Errorf("the orphaned prewarm ended with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the interrupted run's prewarm query was not cancelled")
	}
}

// waitActive waits until an LFC query runs in Postgres.
func waitActive(t *testing.T, ctl lfctest.Control) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := ctl.Conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", lfc.AppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no LFC query started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A monitor that enters a lifecycle it (or an earlier process) has entered before does
// not prewarm again: the cache is warm, and an old state must not be loaded over it.
func TestLFCAutoprewarmOncePerLifecycle(t *testing.T) {
	r := newLFCRig(t, rigOptions{autoprewarm: true, seed: func(rec *state.Record) {
		rec.LFC = &lfcstate.States{Seq: 3, Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted}, Offload: lfcstate.OffloadState{Status: lfcstate.OffloadNotOffloaded}}
		rec.Counters.LFC = lfcstate.Counters{Prewarms: 1}
	}})
	r.monitoring()
	time.Sleep(500 * time.Millisecond)
	rec, _ := r.store.Load()
	if rec.LFC == nil || rec.LFC.Seq != 3 || rec.LFC.Prewarm.Status != lfcstate.PrewarmCompleted || rec.Counters.LFC.Prewarms != 1 {
		t.Errorf("re-entered lifecycle: %+v, counters %+v", rec.LFC, rec.Counters.LFC)
	}
	if len(r.storage.Requests()) != 0 {
		t.Errorf("endpoint storage asked: %+v", r.storage.Requests())
	}
}

// Without the neon extension the requests are refused at once (the API's 412), and
// autoprewarm is skipped rather than recorded failed (which would stop the periodic
// offload).
func TestLFCWithoutNeonExtension(t *testing.T) {
	r := newLFCRig(t, rigOptions{autoprewarm: true, noNeon: true})
	r.monitoring()
	if err := r.lfc.Prewarm(""); refusal(err) != lfcstate.RefusedNoExtension || !strings.Contains(err.Error(), "neon extension not installed") {
		t.Errorf("prewarm without the extension = %v", err)
	}
	if err := r.lfc.Offload(); refusal(err) != lfcstate.RefusedNoExtension {
		t.Errorf("offload without the extension = %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if rec, _ := r.store.Load(); rec.LFC != nil || rec.Counters.LFC != (lfcstate.Counters{}) {
		t.Errorf("record after refusals: %+v %+v", rec.LFC, rec.Counters.LFC)
	}
	if len(r.storage.Requests()) != 0 {
		t.Errorf("endpoint storage asked: %+v", r.storage.Requests())
	}
}

// An operation that ends after the compute began a new lifecycle writes nothing into the
// new lifecycle's record.
func TestLFCOutcomeStaysInItsLifecycle(t *testing.T) {
	r := newLFCRig(t, rigOptions{})
	r.monitoring()
	ctx := context.Background()
	if err := r.ctl.SetState(ctx, []byte("s")); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Offload(); err != nil {
		t.Fatal(err)
	}
	r.waitLFC("offload done", func(s lfcstate.States) bool { return s.Offload.Status == lfcstate.OffloadCompleted })
	if err := r.ctl.PrewarmSleep(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r.ctl)
	if _, err := statetest.Reset(r.store); err != nil { // compute-init began a new lifecycle
		t.Fatal(err)
	}
	r.waker.Notify()
	deadline := time.Now().Add(15 * time.Second)
	for r.lfc.current() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the monitor kept the old lifecycle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The old run ends (its query cancelled) and tries to record its outcome.
	for {
		var n int
		if err := r.ctl.Conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", lfc.AppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old prewarm's query did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	rec, _ := r.store.Load()
	if rec.LFC != nil {
		t.Errorf("the old lifecycle's outcome landed in the new record: %+v", rec.LFC)
	}
	if rec.Counters.LFC.Prewarms != 1 || rec.Counters.LFC.Offloads != 1 {
		t.Errorf("counters carried over: %+v", rec.Counters.LFC)
	}
}

// A prewarm that follows a failed one starts from zero progress, not from the count the
// failed one had reached.
func TestLFCProgressOfANewPrewarm(t *testing.T) {
	r := newLFCRig(t, rigOptions{})
	r.monitoring()
	ctx := context.Background()
	if err := r.ctl.SetState(ctx, []byte("s")); err != nil {
		t.Fatal(err)
	}
	if err := r.lfc.Offload(); err != nil {
		t.Fatal(err)
	}
	r.waitLFC("offload done", func(s lfcstate.States) bool { return s.Offload.Status == lfcstate.OffloadCompleted })
	for _, f := range []func() error{
		func() error { return r.ctl.PrewarmSleep(ctx, time.Second) },
		func() error { return r.ctl.SetProgress(ctx, 100, 50, 1) },
		func() error { return r.ctl.FailPrewarm(ctx, "boom") },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatal(err)
	}
	st := r.waitLFC("prewarm failed", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmFailed })
	if st.Prewarm.Progress != (lfcstate.Progress{Total: 100, Prewarmed: 50, Skipped: 1}) {
		t.Errorf("failed prewarm keeps %+v", st.Prewarm.Progress)
	}
	// The next one fails at the download: no count of its own.
	r.storage.SetMode(lfctest.ServerError)
	if err := r.lfc.Prewarm(""); err != nil {
		t.Fatal(err)
	}
	st = r.waitLFC("second prewarm failed", func(s lfcstate.States) bool {
		return s.Prewarm.Status == lfcstate.PrewarmFailed && strings.Contains(s.Prewarm.Error, "500")
	})
	if st.Prewarm.Progress != (lfcstate.Progress{}) {
		t.Errorf("a new prewarm shows the last one's progress: %+v", st.Prewarm.Progress)
	}
}

func pgOf(o rigOptions, connstr string) LFCPostgres {
	if o.pg == nil {
		return nil
	}
	return o.pg(connstr)
}

// flakyPG fails its first extension check (Postgres slow or out of connections right
// after running).
type flakyPG struct {
	lfc.PG
	failed atomic.Bool
}

func (p *flakyPG) CheckExtension(ctx context.Context) error {
	if p.failed.CompareAndSwap(false, true) {
		return errors.New("connecting to postgres: too many clients")
	}
	return p.PG.CheckExtension(ctx)
}

// An autoprewarm whose extension check fails for another reason than a missing extension
// still takes the prewarm: left not_prewarmed, the state would let the periodic offload
// upload a cold cache over the stored one.
func TestLFCAutoprewarmDespiteAFailedCheck(t *testing.T) {
	r := newLFCRig(t, rigOptions{autoprewarm: true, interval: 1,
		pg: func(connstr string) LFCPostgres { return &flakyPG{PG: lfc.PG{Connstr: connstr}} },
		before: func(r *lfcRig) {
			if err := r.ctl.SetState(context.Background(), []byte("cold")); err != nil {
				t.Fatal(err)
			}
			r.storage.SetMode(lfctest.ServerError)
		}})
	r.waitLFC("autoprewarm failed", func(s lfcstate.States) bool { return s.Prewarm.Status == lfcstate.PrewarmFailed })
	time.Sleep(2500 * time.Millisecond) // two periodic ticks
	for _, req := range r.storage.Requests() {
		if req.Method == "PUT" {
			t.Fatalf("a cold LFC state was uploaded: %+v", req.Path)
		}
	}
}
