package promote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
)

func connect(t *testing.T, connstr string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), connstr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// flushLSN writes on the primary and returns its WAL flush LSN, as the control plane
// would send it after stopping the primary.
func flushLSN(t *testing.T, c *pgx.Conn) spec.Lsn {
	t.Helper()
	var s string
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := spec.ParseLsn(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func inRecovery(t *testing.T, connstr string) bool {
	t.Helper()
	var b bool
	if err := connect(t, connstr).QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// noSleep counts the waits instead of sleeping.
type noSleep struct{ n int }

func (s *noSleep) sleep(ctx context.Context, _ time.Duration) error { s.n++; return ctx.Err() }

func TestPromoteStandby(t *testing.T) {
	for _, neon := range []bool{false, true} {
		name := "standalone"
		if neon {
			name = "neon"
		}
		t.Run(name, func(t *testing.T) {
			var opts []pgtest.Option
			if neon {
				// Vanilla Postgres knows neon.safekeepers only as a placeholder (here from
				// the command line, which also wins over postgresql.auto.conf, so the
				// file is what the test reads); the neon extension defines it for real.
				opts = append(opts, pgtest.WithSetting("neon.safekeepers", ""))
			}
			primary := pgtest.Start(t, opts...)
			pc := connect(t, primary.Connstr())
			standby := pgtest.StartStandby(t, primary, opts...)
			exec(t, pc, "CREATE TABLE promoted (id int)")
			exec(t, pc, "INSERT INTO promoted SELECT generate_series(1, 1000)")
			want := flushLSN(t, pc)

			// Real waits: the standby streams the WAL meanwhile (bounded at 20 s).
			p := New(Options{Connstr: standby.Connstr(), Interval: 20 * time.Millisecond, Retries: 1000})
			sks := "sk1:5454,sk-'2':5454"
			res, err := p.Promote(context.Background(), promotestate.Request{Safekeepers: sks, WALFlushLSN: want}, Run{Neon: neon})
			if err != nil {
				t.Fatalf("Promote: %v\n%s", err, standby.ReadLog(t))
			}
			if res.AlreadyPromoted || res.Replayed < want {
				t.Errorf("result %+v, want replayed >= %s", res, want)
			}
			if inRecovery(t, standby.Connstr()) {
				t.Fatal("the standby is still in recovery")
			}
			sc := connect(t, standby.Connstr())
			exec(t, sc, "INSERT INTO promoted VALUES (1001)")
			var n int
			if err := sc.QueryRow(context.Background(), "SELECT count(*) FROM promoted").Scan(&n); err != nil || n != 1001 {
				t.Errorf("rows %d (%v), want 1001", n, err)
			}
			auto, err := os.ReadFile(filepath.Join(standby.DataDir, "postgresql.auto.conf"))
			if err != nil {
				t.Fatal(err)
			}
			line := "neon.safekeepers = 'sk1:5454,sk-''2'':5454'"
			if got := strings.Contains(string(auto), line); got != neon {
				t.Errorf("postgresql.auto.conf has %q: %v, want %v:\n%s", line, got, neon, auto)
			}
			if neon {
				if err := p.ResetSafekeepers(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			auto, _ = os.ReadFile(filepath.Join(standby.DataDir, "postgresql.auto.conf"))
			if strings.Contains(string(auto), "neon.safekeepers") {
				t.Errorf("postgresql.auto.conf keeps the safekeepers after the reset:\n%s", auto)
			}

			// Promoted: not a replica any more, unless an earlier process's promotion is
			// resumed.
			if _, err := p.Promote(context.Background(), promotestate.Request{WALFlushLSN: want}, Run{}); !errors.Is(err, ErrNotInRecovery) {
				t.Errorf("second Promote: %v, want ErrNotInRecovery", err)
			}
			res, err = p.Promote(context.Background(), promotestate.Request{WALFlushLSN: want}, Run{Resume: true})
			if err != nil || !res.AlreadyPromoted {
				t.Errorf("resumed Promote: %+v, %v", res, err)
			}
		})
	}
}

func TestPromoteLSNNeverArrives(t *testing.T) {
	primary := pgtest.Start(t)
	pc := connect(t, primary.Connstr())
	standby := pgtest.StartStandby(t, primary)
	exec(t, pc, "CREATE TABLE t (id int)")
	want := flushLSN(t, pc) + 1<<30 // a gigabyte the primary never wrote

	var sl noSleep
	p := New(Options{Connstr: standby.Connstr(), Retries: 3, Sleep: sl.sleep})
	_, err := p.Promote(context.Background(), promotestate.Request{Safekeepers: "sk:1", WALFlushLSN: want}, Run{})
	var cu *CatchUpError
	if !errors.As(err, &cu) {
		t.Fatalf("Promote: %v, want a CatchUpError", err)
	}
	if cu.Want != want || cu.Replayed >= want || cu.Retries != 3 || sl.n != 3 {
		t.Errorf("error %+v after %d waits", cu, sl.n)
	}
	if !strings.HasPrefix(err.Error(), "didn't catch up with primary in 3 retries: replayed up to ") || !strings.Contains(err.Error(), want.String()) {
		t.Errorf("text %q", err)
	}
	if !inRecovery(t, standby.Connstr()) {
		t.Error("a standby that did not catch up was promoted")
	}
}

func TestPromoteCancelledWait(t *testing.T) {
	primary := pgtest.Shared(t)
	standby := pgtest.StartStandby(t, primary)
	ctx, cancel := context.WithCancel(context.Background())
	p := New(Options{Connstr: standby.Connstr(), Sleep: func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}})
	_, err := p.Promote(ctx, promotestate.Request{WALFlushLSN: 1 << 40}, Run{})
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "waiting for the replay: ") {
		t.Errorf("Promote: %v", err)
	}
	if !inRecovery(t, standby.Connstr()) {
		t.Error("promoted after a cancel")
	}
}

func TestPromoteNoPostgres(t *testing.T) {
	p := New(Options{Connstr: "postgresql://cloud_admin@/postgres?host=/nonexistent&connect_timeout=1"})
	_, err := p.Promote(context.Background(), promotestate.Request{}, Run{})
	if err == nil || !strings.HasPrefix(err.Error(), "connecting to postgres: ") {
		t.Errorf("Promote: %v", err)
	}
}

func TestMain(m *testing.M) { pgtest.Main(m) }
