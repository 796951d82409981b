package system

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/sktest"
)

// TestNeonStartBench measures neon-mode cold starts against the fakes under real systemd
// (bench/neon-start.sh runs it; COMPUTE_BENCH_NEON_STARTS=N cold starts per scenario). It
// reports figures and asserts no timings:
//
//   - "first start": the pageserver serves a fresh cluster, so the spec apply creates the
//     spec's role and database;
//   - "existing endpoint": the pageserver serves a basebackup of the compute as the first
//     start left it (as Neon's storage keeps a compute's data), so the apply finds
//     everything in place: Neon's usual cold start.
//
// Each start's breakdown comes from /metrics.json, the state record and the units'
// timestamps (systemctl show --timestamp=us), all relative to the record's start_time.
func TestNeonStartBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("COMPUTE_BENCH_NEON_STARTS"))
	if n <= 0 {
		t.Skip("benchmark: set COMPUTE_BENCH_NEON_STARTS=N (bench/neon-start.sh)")
	}
	f, orig := neonSetup(t)
	sktest.SetShimFail(t, f.SyncShim, "")
	sktest.SetShimLSN(t, f.SyncShim, neonStartLSN)
	f.setSafekeepers(t, "")
	writeDefaults(t, orig, f)
	writeConfig(t, f.spec("Primary"))

	// One start to warm the page cache and the fakes; not counted.
	benchStart(t)
	first := make([]startBreakdown, 0, n)
	for i := 0; i < n; i++ {
		first = append(first, benchStart(t))
	}
	// The compute is running with the spec applied: from now on the pageserver serves
	// its data.
	f.http(t, "PUT", "/fake/archive?host="+pgSocketDir+"&port=55432&user=cloud_admin", nil)
	t.Cleanup(func() { f.http(t, "DELETE", "/fake/archive", nil) })
	benchStart(t)
	existing := make([]startBreakdown, 0, n)
	for i := 0; i < n; i++ {
		existing = append(existing, benchStart(t))
	}
	report(t, "first start (the apply creates the role and the database)", first)
	report(t, "existing endpoint (the basebackup has the spec's objects)", existing)
}

// startBreakdown is one cold start, in milliseconds from the record's start_time.
type startBreakdown struct {
	metrics map[string]float64
	// ddl is the time the spec's statements took (the apply actions' durations, from
	// compute-configure's journal): part of config_ms, spent inside Postgres.
	ddl float64
	// what happened when, from start_time
	prepareDone, initExit, pgJob, pgExec, pgReady, cfgJob, cfgExec, running float64
}

func (b startBreakdown) overhead() float64 {
	m := b.metrics
	return m["total_startup_ms"] - m["sync_safekeepers_ms"] - m["basebackup_ms"] - m["start_postgres_ms"]
}

// unitTimes reads a unit's timestamps at microsecond precision.
func unitTimes(t *testing.T, unit string) map[string]time.Time {
	t.Helper()
	props := []string{"InactiveExitTimestamp", "ExecMainStartTimestamp", "ExecMainExitTimestamp", "ActiveEnterTimestamp"}
	args := []string{"show", "--timestamp=us"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out := run(t, "/bin/systemctl", append(args, unit)...)
	res := map[string]time.Time{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		if v == "" {
			continue
		}
		ts, err := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", v)
		if err != nil {
			t.Fatalf("%s %s=%q: %v", unit, k, v, err)
		}
		res[k] = ts
	}
	return res
}

// benchStart runs one cold start to running and returns its breakdown.
func benchStart(t *testing.T) startBreakdown {
	t.Helper()
	s := startNeon(t, "running")
	st, err := time.Parse(time.RFC3339Nano, s.StartTime)
	if err != nil {
		t.Fatal(err)
	}
	rel := func(ts time.Time) float64 {
		if ts.IsZero() {
			return -1
		}
		return float64(ts.Sub(st).Microseconds()) / 1000
	}
	var b startBreakdown
	b.metrics = map[string]float64{}
	for k, v := range metricsJSON(t) {
		if x, ok := v.(float64); ok {
			b.metrics[k] = x
		}
	}
	var full struct {
		PrepareDoneAt time.Time `json:"prepare_done_at"`
	}
	if err := json.Unmarshal([]byte(run(t, "/usr/bin/compute-init", "status", "--full")), &full); err != nil {
		t.Fatal(err)
	}
	b.prepareDone = rel(full.PrepareDoneAt)
	ini, pg, cfg := unitTimes(t, "compute-init.service"), unitTimes(t, "compute-postgres.service"), unitTimes(t, "compute-configure.service")
	b.initExit = rel(ini["ExecMainExitTimestamp"])
	b.pgJob, b.pgExec, b.pgReady = rel(pg["InactiveExitTimestamp"]), rel(pg["ExecMainStartTimestamp"]), rel(pg["ActiveEnterTimestamp"])
	b.cfgJob, b.cfgExec = rel(cfg["InactiveExitTimestamp"]), rel(cfg["ExecMainStartTimestamp"])
	b.running = b.metrics["total_startup_ms"]
	b.ddl = applyActionsMs(t)
	return b
}

// applyActionsMs sums the durations of the apply actions that the current run of
// compute-configure logged.
func applyActionsMs(t *testing.T) float64 {
	t.Helper()
	inv := strings.TrimSpace(run(t, "/bin/systemctl", "show", "-p", "InvocationID", "--value", "compute-configure.service"))
	out := run(t, "/bin/journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_INVOCATION_ID="+inv)
	var sum float64
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `msg="apply action"`) {
			continue
		}
		_, v, ok := strings.Cut(l, " action_ms=")
		if !ok {
			// A line of an apply action without its duration: the log format changed
			// under the benchmark, whose figure would then be wrong.
			t.Fatalf("apply action without action_ms: %q", l)
		}
		v, _, _ = strings.Cut(v, " ")
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("apply action_ms %q: %v", v, err)
		}
		sum += ms
	}
	return sum
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report prints the medians of a scenario as a markdown table.
func report(t *testing.T, title string, runs []startBreakdown) {
	t.Helper()
	col := func(f func(startBreakdown) float64) (float64, float64, float64) {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = f(r)
		}
		return median(xs), slices.Min(xs), slices.Max(xs)
	}
	m := func(k string) func(startBreakdown) float64 {
		return func(b startBreakdown) float64 { return b.metrics[k] }
	}
	rows := []struct {
		name string
		f    func(startBreakdown) float64
	}{
		{"sync_sk_check_ms", m("sync_sk_check_ms")},
		{"sync_safekeepers_ms", m("sync_safekeepers_ms")},
		{"basebackup_ms", m("basebackup_ms")},
		{"start_postgres_ms", m("start_postgres_ms")},
		{"config_ms", m("config_ms")},
		{"total_startup_ms", m("total_startup_ms")},
		{"**overhead** (total - sync - basebackup - start_postgres)", startBreakdown.overhead},
		{"overhead without sync_sk_check_ms too", func(b startBreakdown) float64 { return b.overhead() - b.metrics["sync_sk_check_ms"] }},
		{"spec statements (apply actions, inside config_ms)", func(b startBreakdown) float64 { return b.ddl }},
		{"overhead without the spec statements", func(b startBreakdown) float64 { return b.overhead() - b.ddl }},
		{"t: prepare done (compute-init)", func(b startBreakdown) float64 { return b.prepareDone }},
		{"t: compute-init exited", func(b startBreakdown) float64 { return b.initExit }},
		{"t: compute-postgres job started", func(b startBreakdown) float64 { return b.pgJob }},
		{"t: postgres exec'd", func(b startBreakdown) float64 { return b.pgExec }},
		{"t: postgres ready (READY=1)", func(b startBreakdown) float64 { return b.pgReady }},
		{"t: compute-configure job started", func(b startBreakdown) float64 { return b.cfgJob }},
		{"t: compute-configure exec'd", func(b startBreakdown) float64 { return b.cfgExec }},
		{"t: running", func(b startBreakdown) float64 { return b.running }},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n### %s: %d cold starts\n\n| ms | median | min | max |\n|---|---|---|---|\n", title, len(runs))
	for _, r := range rows {
		med, lo, hi := col(r.f)
		fmt.Fprintf(&sb, "| %s | %.1f | %.1f | %.1f |\n", r.name, med, lo, hi)
	}
	t.Log(sb.String())
	fmt.Println(sb.String())
}
