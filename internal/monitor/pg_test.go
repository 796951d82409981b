package monitor

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// shared is the package's shared server; autovacuum is off so that no worker shows up
// in a sample by chance (the autovacuum rule has its own server).
func shared(t *testing.T) *pgtest.Instance {
	return pgtest.Shared(t, pgtest.WithSetting("autovacuum", "off"))
}

var seq atomic.Int64

func uniq(prefix string) string { return fmt.Sprintf("%s_%d", prefix, seq.Add(1)) }

func dial(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), connstr)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func run(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newRole creates a login role and returns its name.
func newRole(t *testing.T, inst *pgtest.Instance, admin *pgx.Conn) string {
	t.Helper()
	role := uniq("app")
	run(t, admin, "CREATE ROLE "+pg.Ident(role)+" LOGIN")
	return role
}

// monitorSource connects as the monitor does (PGConnector, admin role), with the session
// time zone set to tz, far from UTC, to show the time-zone fix.
func monitorSource(t *testing.T, inst *pgtest.Instance, tz string) (Conn, *pgx.Conn) {
	t.Helper()
	conn, err := PGConnector(inst.Connstr()+"&timezone="+tz, pgtest.AdminUser)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, conn.(pgConn).c
}

func stateChange(t *testing.T, admin *pgx.Conn, pid uint32) time.Time {
	t.Helper()
	var ts time.Time
	if err := admin.QueryRow(context.Background(), "SELECT state_change FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&ts); err != nil {
		t.Fatalf("state_change of %d: %v", pid, err)
	}
	return ts
}

// waitFor polls cond (a condition in Postgres that becomes true asynchronously) for up to
// 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sample(t *testing.T, s *Sampler, src Source) Sample {
	t.Helper()
	got, err := s.Sample(context.Background(), src)
	if err != nil {
		t.Fatalf("sample: %v", err)
	}
	return got
}

// Sessions of another role move last_active; the admin role's do not; idle in a
// transaction and running a statement are "active now"; the idle time is in UTC even
// when the monitor's session has another time zone.
func TestPGSessions(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	admin := dial(t, inst.Connstr())
	role := newRole(t, inst, admin)
	src, monConn := monitorSource(t, inst, "Pacific/Auckland")
	s := &Sampler{}
	tr := NewTracker(time.Time{}, time.Second)

	// Only the admin role is connected (this test's admin session, the monitor).
	got := sample(t, s, src)
	if got.Reason != ReasonNone || !got.LastActive.IsZero() {
		t.Fatalf("no user session: %+v", got)
	}

	// A session of another role runs a statement and goes idle: its state_change.
	app := dial(t, inst.TCPConnstr(role, "", "postgres"))
	run(t, app, "SELECT 1")
	pid := app.PgConn().PID()
	waitFor(t, "the app session to be idle", func() bool {
		var st string
		_ = admin.QueryRow(ctx, "SELECT state FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&st)
		return st == "idle"
	})
	idle1 := stateChange(t, admin, pid)
	got = sample(t, s, src)
	if got.Reason != ReasonBackendIdle || !got.LastActive.Equal(idle1) || got.LastActive.Location() != time.UTC {
		t.Fatalf("idle app session: %+v, want %v", got, idle1)
	}
	if d := time.Since(got.LastActive); d < 0 || d > time.Minute {
		t.Errorf("last_active %v is %v from now", got.LastActive, d)
	}
	if !tr.Observe(got.LastActive) {
		t.Error("tracker did not move")
	}

	// The reference's text, formatted in Auckland time and labelled Z, is off by hours.
	var refText string
	if err := monConn.QueryRow(ctx, `SELECT to_char(state_change, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM pg_stat_activity WHERE pid = $1`, int32(pid)).Scan(&refText); err != nil {
		t.Fatal(err)
	}
	refTime, err := time.Parse(time.RFC3339Nano, refText)
	if err != nil {
		t.Fatal(err)
	}
	if off := refTime.Sub(idle1); off < 11*time.Hour {
		t.Errorf("the reference's reading is off by %v only; the test does not show the quirk", off)
	}

	// Nothing new: the value stays.
	if got = sample(t, s, src); got.Reason != ReasonNone || !got.LastActive.Equal(idle1) {
		t.Fatalf("no change: %+v", got)
	}

	// The admin role's sessions, idle or in a transaction, do not count.
	admin2 := dial(t, inst.Connstr())
	run(t, admin2, "SELECT 1")
	run(t, admin2, "BEGIN")
	run(t, admin2, "SELECT 1")
	if got = sample(t, s, src); got.Reason != ReasonNone || !got.LastActive.Equal(idle1) {
		t.Fatalf("admin session moved it: %+v", got)
	}
	run(t, admin2, "COMMIT")
	admin2.Close(ctx)

	// Another statement of the app session: a newer state_change.
	run(t, app, "SELECT 2")
	idle2 := stateChange(t, admin, pid)
	if !idle2.After(idle1) {
		t.Fatalf("state_change did not move: %v then %v", idle1, idle2)
	}
	if got = sample(t, s, src); got.Reason != ReasonBackendIdle || !got.LastActive.Equal(idle2) {
		t.Fatalf("second statement: %+v, want %v", got, idle2)
	}
	tr.Observe(got.LastActive)

	// Idle in a transaction is active: now.
	run(t, app, "BEGIN")
	run(t, app, "SELECT 3")
	before := time.Now()
	got = sample(t, s, src)
	if got.Reason != ReasonBackendActive || got.LastActive.Before(before) || got.LastActive.After(time.Now()) {
		t.Fatalf("idle in transaction: %+v", got)
	}
	run(t, app, "COMMIT")

	// Running a statement is active.
	busy := dial(t, inst.TCPConnstr(role, "", "postgres"))
	qctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = busy.Exec(qctx, "SELECT pg_sleep(60)")
	}()
	waitFor(t, "the busy session to be active", func() bool {
		var st string
		_ = admin.QueryRow(ctx, "SELECT state FROM pg_stat_activity WHERE pid = $1", int32(busy.PgConn().PID())).Scan(&st)
		return st == "active"
	})
	before = time.Now()
	got = sample(t, s, src)
	cancel()
	<-done
	if got.Reason != ReasonBackendActive || got.LastActive.Before(before) {
		t.Fatalf("active statement: %+v", got)
	}
	active := got.LastActive
	if !tr.Observe(active) {
		t.Error("tracker did not move to an active sample")
	}

	// The sessions close: nothing moves it, and an older idle time never moves it back.
	busy.Close(ctx)
	app.Close(ctx)
	waitFor(t, "the app sessions to end", func() bool {
		var n int
		_ = admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role).Scan(&n)
		return n == 0
	})
	if got = sample(t, s, src); got.Reason != ReasonNone || !got.LastActive.Equal(active) {
		t.Fatalf("after the sessions closed: %+v", got)
	}
	if tr.Observe(idle2) {
		t.Error("tracker moved back")
	}
	if v, _ := tr.Value(); !v.Equal(active) {
		t.Errorf("tracker %v, want %v", v, active)
	}
}

// With activity_monitor_experimental, a session that comes and goes between two samples
// is seen through pg_stat_database, except in the database postgres; without, it is not.
func TestPGStatsDelta(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	admin := dial(t, inst.Connstr())
	role := newRole(t, inst, admin)
	db := uniq("mon_stats")
	run(t, admin, "CREATE DATABASE "+pg.Ident(db))
	src, _ := monitorSource(t, inst, "UTC")
	withStats := &Sampler{StatsDelta: true}
	without := &Sampler{}

	sessions := func(db string) int64 {
		var n int64
		if err := admin.QueryRow(ctx, "SELECT sessions FROM pg_stat_database WHERE datname = $1", db).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// shortSession connects to db as the app role, runs a statement and leaves, and
	// waits until its session is in pg_stat_database (flushed when the backend exits).
	shortSession := func(db string) {
		before := sessions(db)
		c, err := pgx.Connect(ctx, inst.TCPConnstr(role, "", db))
		if err != nil {
			t.Fatal(err)
		}
		run(t, c, "SELECT 1")
		c.Close(ctx)
		waitFor(t, "the session's statistics", func() bool { return sessions(db) > before })
		// The statistics are flushed while the backend exits, before its entry leaves
		// pg_stat_activity: wait for that too, or a sample may still see it idle.
		waitFor(t, "the session's backend to be gone", func() bool {
			var n int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
	}

	// The first sample records; a quiet one after it sees nothing.
	if got := sample(t, withStats, src); got.Reason != ReasonNone {
		t.Fatalf("first sample: %+v", got)
	}
	sample(t, without, src)
	if got := sample(t, withStats, src); got.Reason != ReasonNone {
		t.Fatalf("quiet sample: %+v", got)
	}

	shortSession(db)
	before := time.Now()
	if got := sample(t, withStats, src); got.Reason != ReasonStats || got.LastActive.Before(before) {
		t.Fatalf("short session, with the stats rule: %+v", got)
	}
	if got := sample(t, without, src); got.Reason != ReasonNone || !got.LastActive.IsZero() {
		t.Fatalf("short session, without the stats rule: %+v", got)
	}
	if got := sample(t, withStats, src); got.Reason != ReasonNone {
		t.Fatalf("quiet sample after: %+v", got)
	}

	// The database postgres is left out, as in the reference.
	shortSession("postgres")
	if got := sample(t, withStats, src); got.Reason != ReasonNone {
		t.Fatalf("short session in postgres: %+v", got)
	}
}

// Walsenders count, except walproposer's.
func TestPGWalsenders(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	src, _ := monitorSource(t, inst, "UTC")
	replicate := func(app string) *pgconn.PgConn {
		c, err := pgconn.Connect(ctx, inst.Connstr()+"&replication=database&application_name="+app)
		if err != nil {
			t.Fatalf("replication connection: %v", err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	count := func() int64 {
		n, err := src.Walsenders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d walsenders before any", n)
	}
	wp := replicate("walproposer")
	if n := count(); n != 0 {
		t.Errorf("walproposer counted: %d", n)
	}
	other := replicate("some_replica")
	if n := count(); n != 1 {
		t.Errorf("%d walsenders, want 1", n)
	}
	s := &Sampler{}
	if got := sample(t, s, src); got.Reason != ReasonWalsender {
		t.Errorf("sample with a walsender: %+v", got)
	}
	other.Close(ctx)
	wp.Close(ctx)
	waitFor(t, "the walsenders to end", func() bool { return count() == 0 })
}

// Subscriptions count while their worker runs (pid is not null), not when disabled.
func TestPGSubscriptions(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("wal_level", "logical"), pgtest.WithSetting("autovacuum", "off"))
	ctx := context.Background()
	admin := dial(t, inst.Connstr())
	run(t, admin, "CREATE DATABASE pub")
	run(t, admin, "CREATE DATABASE sub")
	pubc := dial(t, inst.ConnstrDB("pub"))
	run(t, pubc, "CREATE TABLE t (id int PRIMARY KEY)")
	run(t, pubc, "CREATE PUBLICATION p FOR TABLE t")
	run(t, pubc, "SELECT pg_create_logical_replication_slot('s1', 'pgoutput')")
	subc := dial(t, inst.ConnstrDB("sub"))
	run(t, subc, "CREATE TABLE t (id int PRIMARY KEY)")
	conninfo := fmt.Sprintf("host=%s port=%d dbname=pub user=%s", inst.SocketDir, inst.Port, pgtest.AdminUser)
	src, _ := monitorSource(t, inst, "UTC")
	count := func() int64 {
		n, err := src.Subscriptions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	run(t, subc, "CREATE SUBSCRIPTION s1 CONNECTION '"+conninfo+"' PUBLICATION p WITH (create_slot = false, slot_name = 's1', enabled = false)")
	if n := count(); n != 0 {
		t.Fatalf("%d active subscriptions while disabled", n)
	}
	run(t, subc, "ALTER SUBSCRIPTION s1 ENABLE")
	waitFor(t, "the subscription worker", func() bool { return count() == 1 })
	run(t, subc, "ALTER SUBSCRIPTION s1 DISABLE")
	waitFor(t, "the subscription worker to stop", func() bool { return count() == 0 })
	run(t, subc, "ALTER SUBSCRIPTION s1 SET (slot_name = NONE)")
	run(t, subc, "DROP SUBSCRIPTION s1")
}

// The queries' errors: a closed connection, and rows that do not fit.
func TestPGSourceErrors(t *testing.T) {
	inst := shared(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	closed := PGSource{Conn: c, AdminRole: pgtest.AdminUser}
	if _, err := closed.DatabaseStats(ctx); err == nil || !strings.HasPrefix(err.Error(), "database statistics: ") {
		t.Errorf("DatabaseStats on a closed connection: %v", err)
	}
	if _, err := closed.Backends(ctx); err == nil || !strings.HasPrefix(err.Error(), "backends: ") {
		t.Errorf("Backends on a closed connection: %v", err)
	}
	for what, f := range map[string]func(context.Context) (int64, error){
		"count walsenders: ": closed.Walsenders, "count subscriptions: ": closed.Subscriptions,
		"count autovacuum workers: ": closed.AutovacuumWorkers,
	} {
		if _, err := f(ctx); err == nil || !strings.HasPrefix(err.Error(), what) {
			t.Errorf("%s on a closed connection: %v", what, err)
		}
	}

	live := dial(t, inst.Connstr())
	// A row that does not scan.
	bad := PGSource{Conn: rewrite{live, `SELECT 'idle'::text, 'not a time'::text`}}
	if _, err := bad.Backends(ctx); err == nil || !strings.HasPrefix(err.Error(), "backends: ") {
		t.Errorf("Backends with a bad row: %v", err)
	}
	// An error after the first row.
	late := PGSource{Conn: rewrite{live, `SELECT 'idle'::text, now() FROM generate_series(1, 2) g WHERE 1 / (2 - g) > 0`}}
	if _, err := late.Backends(ctx); err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Errorf("Backends with an error after a row: %v", err)
	}
	// The connection still works after those.
	if _, err := (PGSource{Conn: live}).AutovacuumWorkers(ctx); err != nil {
		t.Errorf("connection unusable after the errors: %v", err)
	}
}

// rewrite runs its own SQL whatever it is asked, to make rows that do not fit.
type rewrite struct {
	c   *pgx.Conn
	sql string
}

func (r rewrite) Query(ctx context.Context, _ string, _ ...any) (pgx.Rows, error) {
	return r.c.Query(ctx, r.sql)
}

func (r rewrite) QueryRow(ctx context.Context, _ string, _ ...any) pgx.Row {
	return r.c.QueryRow(ctx, r.sql)
}

func TestPGConnectorError(t *testing.T) {
	if _, err := PGConnector("postgresql://u:s3cr3t@[::1/db", "cloud_admin")(context.Background()); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("bad connstr: %v", err)
	}
	inst := shared(t)
	// A database that does not exist: the connect error.
	if _, err := PGConnector(inst.ConnstrDB("no_such_db"), "cloud_admin")(context.Background()); err == nil || !strings.Contains(err.Error(), "no_such_db") {
		t.Errorf("missing database: %v", err)
	}
	// The monitor's connection is named as the reference's.
	src, mon := monitorSource(t, inst, "UTC")
	_ = src
	var app string
	if err := mon.QueryRow(context.Background(), "SHOW application_name").Scan(&app); err != nil || app != AppName {
		t.Errorf("application_name %q, %v", app, err)
	}
}

// The loop against a real server that stops and comes back: rounds fail, the downtime
// grows on the loop's clock, and the loop reconnects when the server is back.
func TestPGLoopDowntime(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("autovacuum", "off"))
	admin := dial(t, inst.Connstr())
	role := newRole(t, inst, admin)
	// The app session stays connected until the server stops.
	app := dial(t, inst.TCPConnstr(role, "", "postgres"))
	run(t, app, "SELECT 1")
	idle := stateChange(t, admin, app.PgConn().PID())

	var connects atomic.Int64
	pgc := PGConnector(inst.Connstr(), pgtest.AdminUser)
	conns := func(ctx context.Context) (Conn, error) {
		connects.Add(1)
		return pgc(ctx)
	}
	r := startLoop(t, nil, func(l *Loop) {
		l.Connect = conns
		l.Sampler = &Sampler{Now: time.Now}
		l.Downtime = NewDowntime(t0)
	})
	d := r.loop.Downtime
	if rd := r.next(t); !rd.ok || rd.s.Reason != ReasonBackendIdle || !rd.s.LastActive.Equal(idle) {
		t.Fatalf("first round: %+v, want the idle time %v", rd, idle)
	}
	before, _ := r.loop.Tracker.Value()

	inst.Halt(t)
	for i := 1; i <= 3; i++ {
		r.clock.tick(500 * time.Millisecond)
		if rd := r.next(t); rd.ok {
			t.Fatalf("round %d with the server stopped succeeded", i)
		}
		want := int64(500 * i)
		if d.CurrentMs() != want || d.TotalMs() != want {
			t.Errorf("after %d failed rounds: current %d total %d, want %d %d", i, d.CurrentMs(), d.TotalMs(), want, want)
		}
	}
	if n := connects.Load(); n != 3 {
		t.Errorf("%d connects, want 3 (the first, then one per round after the failure)", n)
	}

	inst.Resume(t)
	r.clock.tick(500 * time.Millisecond)
	if rd := r.next(t); !rd.ok {
		t.Fatal("round after the server came back failed")
	}
	if d.CurrentMs() != 0 || d.TotalMs() != 1500 {
		t.Errorf("after recovery: current %d total %d, want 0 1500", d.CurrentMs(), d.TotalMs())
	}
	if after, _ := r.loop.Tracker.Value(); !after.Equal(before) {
		t.Errorf("last_active changed over the outage: %v then %v", before, after)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "activity check failed; reconnecting") || !strings.Contains(logs, "postgres reachable again") {
		t.Errorf("outage not logged:\n%s", logs)
	}
}

// Autovacuum workers count. The server vacuums slowly (a cost limit of 1) so that the
// worker stays long enough to be seen. (That no worker means no activity is shown by the
// other tests, whose server runs without autovacuum.)
func TestPGAutovacuum(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("autovacuum_naptime", "1"),
		pgtest.WithSetting("autovacuum_vacuum_cost_delay", "100"), pgtest.WithSetting("autovacuum_vacuum_cost_limit", "1"))
	admin := dial(t, inst.Connstr())
	src, _ := monitorSource(t, inst, "UTC")
	s := &Sampler{}
	run(t, admin, "CREATE TABLE dead (id int)")
	run(t, admin, "INSERT INTO dead SELECT generate_series(1, 20000)")
	run(t, admin, "DELETE FROM dead")
	before := time.Now()
	var got Sample
	waitFor(t, "an autovacuum worker in a sample", func() bool {
		got = sample(t, s, src)
		return got.Reason == ReasonAutovacuum
	})
	if got.LastActive.Before(before) {
		t.Errorf("last_active %v is before the worker started", got.LastActive)
	}
}
