package lfc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/lfc/lfctest"
	"github.com/computetools/compute-tools/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var dbSeq atomic.Int64

// newDB creates a database on the shared server and returns its connection string and
// an admin connection to it.
func newDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	inst := pgtest.Shared(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	db := fmt.Sprintf("lfc_%d", dbSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, inst.ConnstrDB(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return inst.ConnstrDB(db), conn
}

// withNeon is newDB with the stand-in neon extension installed.
func withNeon(t *testing.T) (lfc.PG, lfctest.Control) {
	t.Helper()
	connstr, conn := newDB(t)
	if err := lfctest.Install(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return lfc.PG{Connstr: connstr}, lfctest.Control{Conn: conn}
}

func TestPGWithoutNeonExtension(t *testing.T) {
	connstr, conn := newDB(t)
	ctx := context.Background()
	// Functions of that name outside an extension do not count.
	if _, err := conn.Exec(ctx, "CREATE SCHEMA neon; CREATE FUNCTION neon.get_local_cache_state() RETURNS bytea LANGUAGE sql AS 'SELECT NULL::bytea'"); err != nil {
		t.Fatal(err)
	}
	p := lfc.PG{Connstr: connstr}
	if _, err := p.LocalCacheState(ctx); !errors.Is(err, lfc.ErrNoNeonExtension) {
		t.Errorf("LocalCacheState: %v", err)
	}
	if err := p.PrewarmLocalCache(ctx, []byte("x")); !errors.Is(err, lfc.ErrNoNeonExtension) {
		t.Errorf("PrewarmLocalCache: %v", err)
	}
	if _, err := p.PrewarmInfo(ctx); !errors.Is(err, lfc.ErrNoNeonExtension) || err.Error() != "neon extension not installed" {
		t.Errorf("PrewarmInfo: %v", err)
	}
}

func TestPGUnreachable(t *testing.T) {
	p := lfc.PG{Connstr: "postgresql://cloud_admin@/postgres?host=/nonexistent&connect_timeout=1"}
	ctx := context.Background()
	if _, err := p.LocalCacheState(ctx); err == nil || !strings.HasPrefix(err.Error(), "connecting to postgres: ") {
		t.Errorf("LocalCacheState: %v", err)
	}
	if err := (lfc.PG{Connstr: "::not a url"}).PrewarmLocalCache(ctx, nil); err == nil || !strings.Contains(err.Error(), "parse connection string") {
		t.Errorf("bad connstr: %v", err)
	}
}

func TestPGStandIn(t *testing.T) {
	p, ctl := withNeon(t)
	ctx := context.Background()
	// Empty LFC: NULL, and zero bytes, are both "empty".
	if st, err := p.LocalCacheState(ctx); err != nil || st != nil {
		t.Fatalf("empty state: %q, %v", st, err)
	}
	if err := ctl.SetState(ctx, []byte{}); err != nil {
		t.Fatal(err)
	}
	if st, err := p.LocalCacheState(ctx); err != nil || st != nil {
		t.Fatalf("zero-byte state: %q, %v", st, err)
	}
	state := []byte{0, 1, 2, 0xff, 'x'}
	if err := ctl.SetState(ctx, state); err != nil {
		t.Fatal(err)
	}
	if st, err := p.LocalCacheState(ctx); err != nil || !bytes.Equal(st, state) {
		t.Fatalf("state: %q, %v", st, err)
	}
	if err := ctl.SetProgress(ctx, 10, 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := p.PrewarmLocalCache(ctx, state); err != nil {
		t.Fatal(err)
	}
	got, calls, err := ctl.LastPrewarmed(ctx)
	if err != nil || !bytes.Equal(got, state) || calls != 1 {
		t.Fatalf("stand-in got %q (%d calls), %v", got, calls, err)
	}
	if pr, err := p.PrewarmInfo(ctx); err != nil || pr != (lfcstate.Progress{Total: 10, Prewarmed: 8, Skipped: 2}) {
		t.Fatalf("info %+v, %v", pr, err)
	}
	// Errors raised by the functions.
	if err := ctl.FailState(ctx, "state boom"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.LocalCacheState(ctx); err == nil || !strings.HasPrefix(err.Error(), "querying LFC state: ") || !strings.Contains(err.Error(), "state boom") {
		t.Errorf("LocalCacheState: %v", err)
	}
	if err := ctl.FailPrewarm(ctx, "prewarm boom"); err != nil {
		t.Fatal(err)
	}
	if err := p.PrewarmLocalCache(ctx, state); err == nil || !strings.HasPrefix(err.Error(), "loading LFC state into postgres: ") || !strings.Contains(err.Error(), "prewarm boom") {
		t.Errorf("PrewarmLocalCache: %v", err)
	}
	if err := ctl.FailInfo(ctx, "info boom"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PrewarmInfo(ctx); err == nil || !strings.HasPrefix(err.Error(), "querying prewarm info: ") || !strings.Contains(err.Error(), "info boom") {
		t.Errorf("PrewarmInfo: %v", err)
	}
	// "" stops a failure.
	for _, stop := range []func(context.Context, string) error{ctl.FailState, ctl.FailPrewarm, ctl.FailInfo} {
		if err := stop(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.PrewarmLocalCache(ctx, state); err != nil {
		t.Errorf("after the failures stopped: %v", err)
	}
	// The functions have Neon's argument types (callers may pass the optional ones).
	for _, q := range []string{
		"SELECT neon.get_local_cache_state(NULL::integer)",
		"SELECT neon.get_local_cache_state(max_chunks => 3)",
		"SELECT neon.prewarm_local_cache('\\x00'::bytea, 2)",
		"SELECT neon.prewarm_local_cache(state => '\\x00'::bytea, n_workers => 1)",
		"SELECT total_pages, prewarmed_pages, skipped_pages, active_workers FROM neon.get_prewarm_info()",
	} {
		if _, err := ctl.Conn.Exec(ctx, q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	var n int
	if err := ctl.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON d.refobjid = e.oid
		WHERE e.extname = 'neon' AND d.deptype = 'e'`).Scan(&n); err != nil || n != 3 {
		t.Errorf("%d functions are members of the extension (%v), want 3", n, err)
	}
}

// TestEndToEnd: offload and prewarm on real PostgreSQL 15 with the stand-in and the fake
// endpoint storage.
func TestEndToEnd(t *testing.T) {
	p, ctl := withNeon(t)
	ctx := context.Background()
	s := lfctest.NewStorage(t)
	logs, log := logBuf()
	client := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Logger: log})
	core := lfc.NewCore(lfc.NewMachine(lfc.MachineOptions{}), client, p, lfc.CoreOptions{Logger: log})

	// An empty LFC is not uploaded.
	run, err := core.StartOffload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := core.Machine().Offload(); st.Status != lfcstate.OffloadSkipped || len(s.Requests()) != 0 {
		t.Fatalf("offload of an empty LFC: %+v, %d requests", st, len(s.Requests()))
	}
	// A first start has no state: skipped.
	run, err = core.StartPrewarm(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := core.Machine().Prewarm(); st.Status != lfcstate.PrewarmSkipped {
		t.Fatalf("prewarm without a state: %+v", st)
	}

	state := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 4096)
	if err := ctl.SetState(ctx, state); err != nil {
		t.Fatal(err)
	}
	run, err = core.StartOffload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := core.Machine().Offload(); st.Status != lfcstate.OffloadCompleted {
		t.Fatalf("offload: %+v", st)
	}
	stored, ok := s.Object(objPath)
	if !ok || len(stored) >= len(state) {
		t.Fatalf("stored %d bytes for a %d-byte state", len(stored), len(state))
	}

	if err := ctl.SetProgress(ctx, 100, 0, 5); err != nil {
		t.Fatal(err)
	}
	run, err = core.StartPrewarm(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	run()
	st := core.Machine().Prewarm()
	if st.Status != lfcstate.PrewarmCompleted || st.Progress != (lfcstate.Progress{Total: 100, Prewarmed: 95, Skipped: 5}) {
		t.Fatalf("prewarm: %+v", st)
	}
	got, calls, err := ctl.LastPrewarmed(ctx)
	if err != nil || !bytes.Equal(got, state) || calls != 1 {
		t.Fatalf("Postgres got %d bytes in %d calls (%v), want the offloaded state", len(got), calls, err)
	}
	if c := core.Machine().Counters(); c != (lfcstate.Counters{Prewarms: 2, Offloads: 2}) {
		t.Errorf("counters %+v", c)
	}

	// A prewarm failing in Postgres.
	if err := ctl.FailPrewarm(ctx, "no room in the LFC"); err != nil {
		t.Fatal(err)
	}
	run, _ = core.StartPrewarm(ctx, "")
	run()
	if st := core.Machine().Prewarm(); st.Status != lfcstate.PrewarmFailed || !strings.Contains(st.Error, "no room in the LFC") {
		t.Fatalf("failed prewarm: %+v", st)
	}
	noToken(t, "log", logs.String())
}

// TestCancelPrewarmOnPostgres: cancelling a prewarm cancels its query on the server.
func TestCancelPrewarmOnPostgres(t *testing.T) {
	p, ctl := withNeon(t)
	ctx := context.Background()
	s := lfctest.NewStorage(t)
	s.Put(objPath, zstdOf(t, []byte("state")))
	if err := ctl.PrewarmSleep(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	core := lfc.NewCore(lfc.NewMachine(lfc.MachineOptions{}), lfc.NewClient(endpointOf(s), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)}), p,
		lfc.CoreOptions{Logger: slog.New(slog.DiscardHandler)})
	run, err := core.StartPrewarm(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { run(); close(done) }()

	const running = `SELECT count(*) FROM pg_catalog.pg_stat_activity
		WHERE application_name = $1 AND state = 'active' AND query LIKE '%prewarm_local_cache%'`
	waitFor := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := ctl.Conn.QueryRow(ctx, running, lfc.AppName).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d prewarm queries running, want %d", what, n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("before the cancel", 1)
	if !core.CancelPrewarm() {
		t.Fatal("CancelPrewarm said nothing runs")
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the prewarm did not end after its cancel")
	}
	if st := core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCancelled {
		t.Errorf("prewarm %+v", st)
	}
	waitFor("after the cancel", 0)
	if _, calls, _ := ctl.LastPrewarmed(ctx); calls != 0 {
		t.Errorf("the cancelled query completed (%d calls)", calls)
	}
}

// The extension check can fail too (here: pg_extension locked by another session, and
// the call's context ends).
func TestPGExtensionCheckFails(t *testing.T) {
	p, ctl := withNeon(t)
	ctx := context.Background()
	tx, err := ctl.Conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := p.PrewarmInfo(cctx); err == nil || !strings.HasPrefix(err.Error(), "looking for the neon extension: ") {
		t.Errorf("PrewarmInfo: %v", err)
	}
}

func TestPGCheckExtension(t *testing.T) {
	connstr, _ := newDB(t)
	if err := (lfc.PG{Connstr: connstr}).CheckExtension(context.Background()); !errors.Is(err, lfc.ErrNoNeonExtension) {
		t.Errorf("without the extension: %v", err)
	}
	p, _ := withNeon(t)
	if err := p.CheckExtension(context.Background()); err != nil {
		t.Errorf("with the extension: %v", err)
	}
}

// A prewarm query left running by a process that died is cancelled by the next one.
func TestPGCancelOrphans(t *testing.T) {
	p, ctl := withNeon(t)
	ctx := context.Background()
	if err := ctl.PrewarmSleep(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.PrewarmLocalCache(ctx, []byte("x")) }()
	// Wait until the query runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := ctl.Conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", lfc.AppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the prewarm query did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	n, err := p.CancelOrphans(ctx)
	if err != nil || n != 1 {
		t.Fatalf("CancelOrphans = %d, %v; want 1", n, err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "canceling statement") {
			t.Errorf("the orphaned prewarm ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the orphaned prewarm was not cancelled")
	}
	if n, err := p.CancelOrphans(ctx); err != nil || n != 0 {
		t.Errorf("second CancelOrphans = %d, %v; want 0", n, err)
	}
}
