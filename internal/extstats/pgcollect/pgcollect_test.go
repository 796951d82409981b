package pgcollect

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
)

func dial(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), connstr)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func run(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// onDB runs statements in database db as user (the admin when "").
func onDB(t *testing.T, inst *pgtest.Instance, db, user string, stmts ...string) {
	t.Helper()
	connstr := inst.ConnstrDB(db)
	if user != "" {
		// pgtest's URL names the admin; the options of pgx's URL form take another user.
		connstr += "&user=" + user
	}
	// The URL path cannot hold every name; set the database on the parsed config.
	cfg, err := pgx.ParseConfig(connstr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = db
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect to %q as %q: %v", db, user, err)
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		run(t, c, s)
	}
}

func connector(t *testing.T, connstr string) Connector {
	t.Helper()
	c, err := PGConnector(connstr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// routed reads the list with list and every database with each.
func routed(list, each Connector) Connector {
	return func(ctx context.Context, db string) (*pgx.Conn, error) {
		if db == "" {
			return list(ctx, db)
		}
		return each(ctx, db)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const weirdDB = `we"ird db/é=1 'x'`

func TestCollectCountsValidConnectableDatabases(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("log_connections", "on"))
	admin := dial(t, inst.Connstr())
	run(t, admin, `CREATE ROLE app LOGIN`)
	for _, db := range []string{"db_a", "db_b", weirdDB, "db_noconn", "db_invalid"} {
		run(t, admin, "CREATE DATABASE "+pg.Ident(db))
		run(t, admin, "GRANT CREATE ON DATABASE "+pg.Ident(db)+" TO app")
	}
	// The admin (OID 10, the bootstrap superuser) owns what it creates; app (no
	// superuser) owns the trusted extensions it creates.
	onDB(t, inst, "db_a", "", `CREATE EXTENSION pg_trgm`)
	onDB(t, inst, "db_a", "app", `CREATE EXTENSION hstore`)
	onDB(t, inst, "db_b", "", `CREATE EXTENSION pg_trgm VERSION '1.5'`)
	onDB(t, inst, "db_b", "app", `CREATE EXTENSION hstore`)
	onDB(t, inst, weirdDB, "app", `CREATE EXTENSION pg_trgm`)
	// Not counted: a database that does not accept connections, and an invalid one
	// (datconnlimit = -2, what an interrupted DROP DATABASE leaves).
	onDB(t, inst, "db_noconn", "", `CREATE EXTENSION citext`)
	onDB(t, inst, "db_invalid", "", `CREATE EXTENSION citext`)
	run(t, admin, `ALTER DATABASE db_noconn ALLOW_CONNECTIONS false`)
	run(t, admin, `UPDATE pg_catalog.pg_database SET datconnlimit = -2 WHERE datname = 'db_invalid'`)

	logs := &syncBuf{}
	got, err := Collect(context.Background(), connector(t, inst.Connstr()),
		Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want := []extstats.Extension{
		{Name: "hstore", Version: "1.8", NDatabases: 2, OwnedBySuperuser: "0"},
		{Name: "pg_trgm", Version: "1.5", NDatabases: 1, OwnedBySuperuser: "1"},
		{Name: "pg_trgm", Version: "1.6", NDatabases: 1, OwnedBySuperuser: "0"},
		{Name: "pg_trgm", Version: "1.6", NDatabases: 1, OwnedBySuperuser: "1"},
		// postgres, template1, db_a, db_b and the weird one; template0 does not accept
		// connections.
		{Name: "plpgsql", Version: "1.0", NDatabases: 5, OwnedBySuperuser: "1"},
	}
	if !reflect.DeepEqual(got.Extensions, want) {
		t.Errorf("extensions\n%+v\nwant\n%+v", got.Extensions, want)
	}
	if got.Databases != 5 || got.SkippedDatabases != 0 {
		t.Errorf("databases %d, skipped %d; want 5, 0", got.Databases, got.SkippedDatabases)
	}
	if got.CollectedAt.IsZero() {
		t.Error("no CollectedAt")
	}
	if logs.String() != "" {
		t.Errorf("logged:\n%s", logs)
	}
	// Each database was entered as the admin with the reference's application_name.
	log := inst.ReadLog(t)
	for _, db := range []string{"postgres", "template1", "db_a", "db_b"} {
		line := "connection authorized: user=cloud_admin database=" + db + " application_name=" + AppName
		if !strings.Contains(log, line) {
			t.Errorf("no %q in the server log", line)
		}
	}
	for _, db := range []string{"db_noconn", "db_invalid"} {
		if strings.Contains(log, "database="+db+" application_name="+AppName) {
			t.Errorf("entered %s", db)
		}
	}
}

func TestCollectLimitTakesTheOldestDatabases(t *testing.T) {
	inst := pgtest.Start(t)
	admin := dial(t, inst.Connstr())
	// By OID: template1 (1), postgres (5), then the databases in creation order.
	for i, ext := range []string{"hstore", "citext", "pg_trgm"} {
		db := "lim_" + strconv.Itoa(i)
		run(t, admin, "CREATE DATABASE "+db)
		onDB(t, inst, db, "", "CREATE EXTENSION "+ext)
	}
	got, err := Collect(context.Background(), connector(t, inst.Connstr()), Options{MaxDatabases: 4})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got.Extensions {
		names = append(names, e.Name+"="+strconv.Itoa(e.NDatabases))
	}
	if want := []string{"citext=1", "hstore=1", "plpgsql=4"}; !reflect.DeepEqual(names, want) || got.Databases != 4 {
		t.Errorf("extensions %v of %d databases, want %v of 4 (lim_2 beyond the limit)", names, got.Databases, want)
	}
}

func TestDefaultLimitIsTheReferences(t *testing.T) {
	if DefaultMaxDatabases != 500 {
		t.Errorf("DefaultMaxDatabases = %d", DefaultMaxDatabases)
	}
	if !strings.Contains(listDatabasesSQL, "WHERE datallowconn AND datconnlimit <> -2") {
		t.Errorf("list query %q", listDatabasesSQL)
	}
}

func TestCollectSkipsADatabaseItCannotEnter(t *testing.T) {
	inst := pgtest.Start(t)
	admin := dial(t, inst.Connstr())
	run(t, admin, `CREATE DATABASE shut`)
	onDB(t, inst, "shut", "", `CREATE EXTENSION hstore`)
	run(t, admin, `CREATE DATABASE open`)
	onDB(t, inst, "open", "", `CREATE EXTENSION citext`)
	inst.WriteHBA(t, "local shut all reject\nlocal all all trust\n")

	logs := &syncBuf{}
	got, err := Collect(context.Background(), connector(t, inst.Connstr()),
		Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want := []extstats.Extension{
		{Name: "citext", Version: "1.6", NDatabases: 1, OwnedBySuperuser: "1"},
		{Name: "plpgsql", Version: "1.0", NDatabases: 3, OwnedBySuperuser: "1"},
	}
	if !reflect.DeepEqual(got.Extensions, want) || got.Databases != 3 || got.SkippedDatabases != 1 {
		t.Errorf("got %+v\nwant %+v of 3 databases, 1 skipped", got, want)
	}
	if l := logs.String(); !strings.Contains(l, `level=WARN msg="installed extensions: skipping a database that cannot be read" database=shut err=`) ||
		!strings.Contains(l, "pg_hba.conf rejects connection") {
		t.Errorf("no warning for shut in\n%s", l)
	}
}

func TestCollectSkipsADatabaseThatHangs(t *testing.T) {
	inst := pgtest.Start(t)
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	hung := connector(t, "postgresql://cloud_admin@"+l.Addr().String()+"/postgres?sslmode=disable")
	real := connector(t, inst.Connstr())
	each := func(ctx context.Context, db string) (*pgx.Conn, error) {
		if db == "template1" {
			return hung(ctx, db)
		}
		return real(ctx, db)
	}
	logs := &syncBuf{}
	got, err := Collect(context.Background(), routed(real, each),
		Options{DBTimeout: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if got.Databases != 1 || got.SkippedDatabases != 1 {
		t.Errorf("databases %d, skipped %d; want 1 (postgres), 1 (template1)", got.Databases, got.SkippedDatabases)
	}
	if !strings.Contains(logs.String(), "database=template1") {
		t.Errorf("no warning for template1 in\n%s", logs)
	}
	l.Close()
	held.Wait()
}

func TestCollectFailsWhenNoDatabaseCanBeRead(t *testing.T) {
	inst := pgtest.Start(t)
	// Databases listed by the server, then entered through a socket where nobody listens.
	nowhere := connector(t, "postgresql://cloud_admin@/postgres?host="+pgtest.OwnedDir(t, "extstats-")+"&port="+strconv.Itoa(inst.Port))
	_, err := Collect(context.Background(), routed(connector(t, inst.Connstr()), nowhere),
		Options{Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "none of the 2 databases could be read") ||
		!strings.Contains(err.Error(), `database "template1"`) {
		t.Errorf("Collect: %v", err)
	}
}

func TestCollectFailsWhenTheListCannotBeRead(t *testing.T) {
	nowhere := connector(t, "postgresql://cloud_admin@/postgres?host="+t.TempDir()+"&port=5432")
	_, err := Collect(context.Background(), nowhere, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "list databases: connect to postgres:") {
		t.Errorf("Collect: %v", err)
	}
}

func TestCollectStopsWithItsContext(t *testing.T) {
	inst := pgtest.Start(t)
	real := connector(t, inst.Connstr())
	ctx, cancel := context.WithCancel(context.Background())
	var entered []string
	each := func(c context.Context, db string) (*pgx.Conn, error) {
		entered = append(entered, db)
		cancel() // the caller gives up while the first database is read
		return real(c, db)
	}
	logs := &syncBuf{}
	_, err := Collect(ctx, routed(real, each), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Collect: %v, want context.Canceled", err)
	}
	if len(entered) != 1 {
		t.Errorf("entered %v after the context ended", entered)
	}
	if logs.String() != "" {
		t.Errorf("a cancelled collection logged:\n%s", logs)
	}
}

func TestPGConnectorRefusesABadConnstr(t *testing.T) {
	if _, err := PGConnector("postgresql://%zz"); err == nil {
		t.Error("no error")
	}
}

// waitClock is a Clock whose timers never fire; it tells the test when one is made.
type waitClock struct{ waits chan time.Duration }

type neverTimer struct{}

func (neverTimer) C() <-chan time.Time { return nil }
func (neverTimer) Stop() bool          { return true }

func (c waitClock) Now() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
func (c waitClock) NewTimer(d time.Duration) extstats.Timer {
	c.waits <- d
	return neverTimer{}
}

// The production wiring: a primary's start collects at once, publishes, logs the
// reference's line, then waits twice the interval of the spec's suspend timeout.
func TestSchedulerWithCollect(t *testing.T) {
	inst := pgtest.Start(t)
	connect := connector(t, inst.Connstr())
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	published := make(chan extstats.Stats, 1)
	clock := waitClock{waits: make(chan time.Duration, 1)}
	s := &extstats.Scheduler{
		Collect: func(ctx context.Context) (extstats.Stats, error) {
			return Collect(ctx, connect, Options{Log: log})
		},
		Publish: func(_ context.Context, st extstats.Stats) error { published <- st; return nil },
		Base:    func() time.Duration { return extstats.Interval(300, extstats.DefaultInterval) },
		AtStart: true,
		Clock:   clock,
		Log:     log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case st := <-published:
		want := []extstats.Extension{{Name: "plpgsql", Version: "1.0", NDatabases: 2, OwnedBySuperuser: "1"}}
		if !reflect.DeepEqual(st.Extensions, want) || !st.CollectedAt.Equal(clock.Now()) {
			t.Errorf("published %+v", st)
		}
	case <-time.After(time.Minute):
		t.Fatal("nothing published")
	}
	select {
	case d := <-clock.waits:
		if d != 10*time.Minute {
			t.Errorf("waits %v, want 10m", d)
		}
	case <-time.After(time.Minute):
		t.Fatal("no wait")
	}
	if !strings.Contains(logs.String(), `msg="[NEON_EXT_STAT] {\"extensions\":[{\"extname\":\"plpgsql\",\"version\":\"1.0\",\"n_databases\":2,\"owned_by_superuser\":\"1\"}]}" databases=2`) {
		t.Errorf("no stat line in\n%s", logs)
	}
}
