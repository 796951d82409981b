package monitord

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// waitRecord polls the state record (the monitor writes it asynchronously) for up to 20 s.
func waitRecord(t *testing.T, store *state.Store, what string, cond func(state.Record) bool) state.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := store.Load()
		if err == nil && cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: record %+v (%v)", what, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Against a real PostgreSQL 15, with the production connector (the admin role taken from
// the connection string) and the real clock: a session of another role moves last_active
// in the record, the admin's own sessions do not, and a stopped server shows up as
// downtime in the record until it is back.
func TestPGRunPublishes(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("autovacuum", "off"))
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	role := "app_monitord"
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pg.Ident(role)+" LOGIN"); err != nil {
		t.Fatal(err)
	}

	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	waker := &statetest.Waker{}
	store.OnChange = func(state.Record) { waker.Notify() }
	statetest.MustSet(t, store, state.Running, nil)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	const interval = 50 * time.Millisecond
	go func() {
		done <- Run(rctx, Settings{StateDir: t.TempDir(), Connstr: inst.Connstr(), Interval: interval,
			PublishInterval: 100 * time.Millisecond, Recheck: time.Second},
			Deps{Store: store, Subscribe: waker.Subscribe, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// The admin's session alone: no activity.
	if _, err := admin.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if r, _ := store.Load(); r.LastActive != nil {
		t.Fatalf("last_active %v from the admin's own session", r.LastActive)
	}

	app, err := pgx.Connect(ctx, inst.TCPConnstr(role, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	var idleSince time.Time
	if err := admin.QueryRow(ctx, "SELECT state_change FROM pg_stat_activity WHERE pid = $1", int32(app.PgConn().PID())).Scan(&idleSince); err != nil {
		t.Fatal(err)
	}
	r := waitRecord(t, store, "last_active of the app session", func(r state.Record) bool {
		return r.LastActive != nil && !r.LastActive.Before(idleSince)
	})
	// A round that saw the session still active (its SELECT 1) takes the round's own time,
	// at most a round after the session went idle.
	if r.LastActive.After(idleSince.Add(interval)) {
		t.Errorf("last_active %v, the session idle since %v", r.LastActive, idleSince)
	}
	app.Close(ctx)

	inst.Halt(t)
	r = waitRecord(t, store, "downtime while the server is stopped", func(r state.Record) bool {
		return r.PGCurrentDowntimeMs >= 200 && r.Counters.PGDowntimeMsTotal >= 200
	})
	if r.Status != state.Running {
		t.Fatalf("status %s", r.Status)
	}
	inst.Resume(t)
	r = waitRecord(t, store, "recovery", func(r state.Record) bool { return r.PGCurrentDowntimeMs == 0 })
	if r.Counters.PGDowntimeMsTotal < 200 {
		t.Errorf("total downtime %d ms after an outage", r.Counters.PGDowntimeMsTotal)
	}
}
