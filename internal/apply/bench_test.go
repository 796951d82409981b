package apply

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/jackc/pgx/v5"
)

// BenchmarkApply100x100 measures the spec apply at the scale of issue 4 (100 roles with md5
// passwords, 100 databases each owned by one of them), side by side with the floor: a
// single psql script holding only the 100 CREATE ROLE and 100 CREATE DATABASE statements.
//
// It is not run by `go test`: it needs COMPUTE_BENCH=1 (and root and PostgreSQL 15, as
// pgtest does). Run it with bench/apply.sh, or
//
//	COMPUTE_BENCH=1 go test -run '^$' -bench BenchmarkApply100x100 -benchtime=1x -count=1 ./internal/apply/
//
// -benchtime=1x makes every sub-benchmark one iteration on one fresh server. Every server
// is a pgtest instance, so fsync=off (pgtest's setting) for the baseline and for us alike;
// other settings are the defaults (max_connections=100).
//
// Sub-benchmarks, in this order:
//   - baseline: the psql script (process start and connection included);
//   - apply/conc=N: a complete first apply (connection, catalog read, every phase,
//     per-database work in the 100 spec databases; the system database has nothing to do)
//     with N databases at a time; the first is N = StartupConcurrency of a spec with
//     max_connections=100 (33), then 1 and 4.
//     Each reports s/apply and the ratio to the baseline.
//   - on the startup-concurrency server only, after its first apply: a no-op re-apply of
//     the same spec and a one-role password change (alternating between two passwords),
//     each five times, the median reported, at the reconfigure concurrency (1, what
//     /configure uses by default) and at the startup concurrency. These time Apply on an
//     open main connection.
//   - baseline-again: the psql script once more, to show the drift over the run.
//
// The servers are all started (initdb) before the first measurement, and each is only
// stopped, not removed, when its sub-benchmark is done; the files go at the end. On ext4,
// creating files right after many were deleted is much slower (the inode allocator skips
// recently freed inodes: ext4 recently_deleted), and CREATE DATABASE creates about 300
// files; removing one server's 100 databases just before the next measurement would slow
// that measurement down. With b.N > 1, the iterations after the first use servers started
// (and removed) within the sub-benchmark.
//
// Apply's per-action info logs are discarded while the benchmark runs (warnings and
// errors still show), so that the output stays readable; COMPUTE_BENCH_LOG=file writes
// them to file as JSON instead.
func BenchmarkApply100x100(b *testing.B) {
	if os.Getenv("COMPUTE_BENCH") != "1" {
		b.Skip("set COMPUTE_BENCH=1 to run this benchmark (bench/apply.sh)")
	}
	if err := pgtest.Available(); err != nil {
		b.Skip(err.Error())
	}
	prev := slog.Default()
	b.Cleanup(func() { slog.SetDefault(prev) })
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if p := os.Getenv("COMPUTE_BENCH_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		slog.SetDefault(slog.New(slog.NewJSONHandler(f, nil)))
	}

	const n = 100
	s := benchSpec(n)
	startup := StartupConcurrency(s)
	reconf := ReconfigureConcurrency(s)
	concs := uniqInts(startup, 1, 4)

	// One fresh server per sub-benchmark, started now.
	pool := make([]*pgtest.Instance, 0, len(concs)+2)
	for range cap(pool) {
		pool = append(pool, pgtest.Start(b))
	}
	psql := filepath.Join(pool[0].BinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		b.Skipf("psql not found: %v", err)
	}
	fresh := func(b *testing.B) *pgtest.Instance {
		if len(pool) > 0 {
			inst := pool[0]
			pool = pool[1:]
			return inst
		}
		return pgtest.Start(b)
	}

	var rows []benchRow
	var baseline time.Duration
	script := benchScript(n)
	scriptPath := filepath.Join(b.TempDir(), "script.sql")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	runBaseline := func(b *testing.B) time.Duration {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			inst := fresh(b)
			b.StartTimer()
			start := time.Now()
			if _, err := execx.Run(context.Background(), execx.Cmd{
				Path: psql,
				Args: []string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", inst.Connstr(), "-f", scriptPath},
			}); err != nil {
				b.Fatalf("psql script: %v", err)
			}
			total += time.Since(start)
			b.StopTimer()
			stopServer(b, inst)
		}
		mean := total / time.Duration(b.N)
		b.ReportMetric(mean.Seconds(), "s/script")
		return mean
	}

	b.Run("baseline", func(b *testing.B) {
		baseline = runBaseline(b)
		rows = append(rows, benchRow{"baseline: psql script, 100 CREATE ROLE + 100 CREATE DATABASE", fmtSeconds(baseline), ""})
	})

	for k, conc := range concs {
		b.Run(fmt.Sprintf("apply/conc=%d", conc), func(b *testing.B) {
			ctx := context.Background()
			var total time.Duration
			var inst *pgtest.Instance
			var conn *pgx.Conn
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if inst != nil {
					conn.Close(ctx)
					stopServer(b, inst)
				}
				inst = fresh(b)
				b.StartTimer()
				start := time.Now()
				var err error
				conn, err = pg.Connect(ctx, inst.Connstr(), "compute_ctl:apply_config")
				if err != nil {
					b.Fatalf("connect: %v", err)
				}
				res, err := Apply(ctx, conn, s, Options{Concurrency: conc})
				if err != nil {
					b.Fatalf("Apply: %v", err)
				}
				total += time.Since(start)
				b.StopTimer()
				// The spec's databases; the system database has nothing that could be
				// done (no role to delete) and is skipped.
				if res.Databases != n || res.DBsIdle != 1 {
					b.Fatalf("per-database work done in %d databases (%d idle), want %d (1 idle)", res.Databases, res.DBsIdle, n)
				}
			}
			defer stopServer(b, inst)
			defer conn.Close(ctx)
			mean := total / time.Duration(b.N)
			b.ReportMetric(mean.Seconds(), "s/apply")
			ratio := ""
			if baseline > 0 {
				r := mean.Seconds() / baseline.Seconds()
				b.ReportMetric(r, "x-baseline")
				ratio = fmt.Sprintf("%.2fx baseline (target <= 1.5x)", r)
			}
			what := fmt.Sprintf("first apply, concurrency %d", conc)
			if conc == startup {
				what += " (startup rule, max_connections=100)"
			}
			rows = append(rows, benchRow{what, fmtSeconds(mean), ratio})
			if k != 0 {
				return
			}
			rows = append(rows, reapplies(b, conn, s, uniqInts(reconf, startup))...)
		})
	}

	b.Run("baseline-again", func(b *testing.B) {
		again := runBaseline(b)
		rows = append(rows, benchRow{"baseline again, at the end of the run (drift)", fmtSeconds(again), ""})
	})

	var sb strings.Builder
	sb.WriteString("\nspec apply at scale: 100 roles (md5 passwords), 100 databases; fsync=off everywhere\n")
	w := 0
	for _, r := range rows {
		w = max(w, len(r.what))
	}
	for _, r := range rows {
		fmt.Fprintf(&sb, "  %-*s  %10s  %s\n", w, r.what, r.value, r.note)
	}
	// b.Log of a benchmark that has sub-benchmarks is not printed; the table goes to
	// stdout directly.
	fmt.Print(sb.String())
}

// reapplies measures, on a server where s is applied, a no-op re-apply and a one-role
// password change at each concurrency, and where a no-op's time goes.
func reapplies(b *testing.B, conn *pgx.Conn, s *spec.ComputeSpec, concs []int) []benchRow {
	ctx := context.Background()
	var rows []benchRow
	for _, rc := range concs {
		// A full re-apply (per-database work everywhere, as an apply by hand does).
		full := medianOf(3, func() {
			if _, err := Apply(ctx, conn, s, Options{Concurrency: rc}); err != nil {
				b.Fatalf("full re-apply: %v", err)
			}
		})
		// What a start and /configure do: databases whose per-database work is unchanged
		// since the last apply (as recorded in the cluster) are skipped.
		opts := Options{Concurrency: rc, SkipUnchanged: true}
		noop := medianOf(5, func() {
			res, err := Apply(ctx, conn, s, opts)
			if err != nil {
				b.Fatalf("no-op re-apply: %v", err)
			}
			if res.Total != 0 {
				b.Fatalf("no-op re-apply ran %d actions, want 0", res.Total)
			}
		})
		passwords := [2]string{"bench-other-password", "bench-password-0"}
		round := 0
		change := medianOf(5, func() {
			c := *s
			c.Cluster.Roles = append([]spec.Role(nil), s.Cluster.Roles...)
			c.Cluster.Roles[0].EncryptedPassword = ptr(md5Hash(passwords[round%2], c.Cluster.Roles[0].Name))
			round++
			res, err := Apply(ctx, conn, &c, opts)
			if err != nil {
				b.Fatalf("one-role change: %v", err)
			}
			if res.Total != 1 || res.PerPhase[PhaseCreateAndAlterRoles] != 1 {
				b.Fatalf("one-role change ran %v, want one ALTER ROLE", res.PerPhase)
			}
		})
		// Back to the spec's password (five changes leave the other one).
		if _, err := Apply(ctx, conn, s, opts); err != nil {
			b.Fatalf("restore password: %v", err)
		}
		b.ReportMetric(float64(noop.Microseconds())/1000, fmt.Sprintf("ms/noop-c%d", rc))
		b.ReportMetric(float64(change.Microseconds())/1000, fmt.Sprintf("ms/role-change-c%d", rc))
		b.ReportMetric(float64(full.Microseconds())/1000, fmt.Sprintf("ms/full-reapply-c%d", rc))
		rows = append(rows,
			benchRow{fmt.Sprintf("full re-apply, no skip (an apply by hand), concurrency %d (median of 3)", rc), fmtMillis(full), ""},
			benchRow{fmt.Sprintf("no-op re-apply, concurrency %d (median of 5)", rc), fmtMillis(noop), "target < 50 ms"},
			benchRow{fmt.Sprintf("one-role password change, concurrency %d (median of 5)", rc), fmtMillis(change), "target < 100 ms"})
	}

	// Where a no-op goes: the main catalog read and plan, and one database's share.
	planOnly := medianOf(5, func() {
		cat, err := ReadCatalog(ctx, conn)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Plan(s, cat, Options{}); err != nil {
			b.Fatal(err)
		}
	})
	db := s.Cluster.Databases[0].Name
	connectOnly := medianOf(5, func() {
		c, err := connectDB(ctx, conn, Options{}, db)
		if err != nil {
			b.Fatal(err)
		}
		c.Close(ctx)
	})
	connectRead := medianOf(5, func() {
		c, err := connectDB(ctx, conn, Options{}, db)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := ReadDBCatalog(ctx, c); err != nil {
			b.Fatal(err)
		}
	})
	return append(rows,
		benchRow{"  no-op, main catalog read + plan (median of 5)", fmtMillis(planOnly), ""},
		benchRow{"  no-op, one database: connect + close (median of 5)", fmtMillis(connectOnly), ""},
		benchRow{"  no-op, one database: connect + catalog read (median of 5)", fmtMillis(connectRead), "x 100 databases"})
}

// stopServer stops inst's server now and leaves its files until the benchmark's cleanup
// (see BenchmarkApply100x100 for why).
func stopServer(b *testing.B, inst *pgtest.Instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := execx.Run(ctx, execx.Cmd{
		Path: filepath.Join(inst.BinDir, "pg_ctl"),
		Args: []string{"stop", "-w", "-m", "immediate", "-D", inst.DataDir},
		User: pgtest.OSUser,
	}); err != nil {
		b.Logf("stop server: %v", err)
	}
}

type benchRow struct{ what, value, note string }

// benchSpec has n roles r_i with md5 passwords and n databases d_i owned by r_i, and
// max_connections=100 in the settings (for StartupConcurrency).
func benchSpec(n int) *spec.ComputeSpec {
	roles := make([]spec.Role, n)
	dbs := make([]spec.Database, n)
	for i := range n {
		role := fmt.Sprintf("r_%d", i)
		roles[i] = spec.Role{Name: role, EncryptedPassword: ptr(md5Hash(fmt.Sprintf("bench-password-%d", i), role))}
		dbs[i] = spec.Database{Name: fmt.Sprintf("d_%d", i), Owner: role}
	}
	s := specOf(roles, dbs)
	s.Cluster.Settings = spec.GenericOptions{opt("max_connections", "100", "integer")}
	return s
}

// benchScript is the floor: the same roles and databases as benchSpec, DDL only.
func benchScript(n int) string {
	var sb strings.Builder
	for i := range n {
		role := fmt.Sprintf("r_%d", i)
		fmt.Fprintf(&sb, "CREATE ROLE %s LOGIN PASSWORD 'md5%s';\n", pg.Ident(role), md5Hash(fmt.Sprintf("bench-password-%d", i), role))
	}
	for i := range n {
		fmt.Fprintf(&sb, "CREATE DATABASE %s OWNER %s;\n", pg.Ident(fmt.Sprintf("d_%d", i)), pg.Ident(fmt.Sprintf("r_%d", i)))
	}
	return sb.String()
}

// medianOf runs fn k times and returns the median duration.
func medianOf(k int, fn func()) time.Duration {
	d := make([]time.Duration, k)
	for i := range d {
		start := time.Now()
		fn()
		d[i] = time.Since(start)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[k/2]
}

func uniqInts(v ...int) []int {
	var out []int
	for _, x := range v {
		dup := false
		for _, y := range out {
			dup = dup || x == y
		}
		if !dup {
			out = append(out, x)
		}
	}
	return out
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func fmtMillis(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}
