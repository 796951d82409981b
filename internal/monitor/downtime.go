package monitor

import (
	"sync"
	"time"
)

// The Prometheus names the reference gives the downtime figures (compute_tools/src/metrics.rs).
const (
	MetricCurrentDowntime = "compute_pg_current_downtime_ms" // gauge
	MetricTotalDowntime   = "compute_pg_downtime_ms_total"   // counter
)

// Downtime computes how long Postgres could not be checked, as the reference does
// (report_up / report_down in compute_tools/src/monitor.rs), from the outcome of each
// round on the caller's clock:
//
//   - current: at a failed round, now minus the end of the last successful round (or the
//     start, if none succeeded yet); 0 after a successful round;
//   - total: at each failed round, plus now minus the end of the previous round (success
//     or failure), so a stretch of failed rounds adds up to its wall time, counted from
//     the end of the last good round.
//
// It is safe for concurrent use (the loop records, a metrics reader reads).
type Downtime struct {
	mu          sync.Mutex
	lastUp      time.Time
	lastChecked time.Time
	current     time.Duration
	total       time.Duration
	down        bool // the last round failed (or an outage was resumed)
}

// NewDowntime starts the bookkeeping at start (the monitor's start: Postgres unreachable
// from the first round on counts from there).
func NewDowntime(start time.Time) *Downtime {
	return &Downtime{lastUp: start, lastChecked: start}
}

// ResumeDowntime starts the bookkeeping at start as NewDowntime does, for a monitor that
// takes over an outage already current ms long (a restarted monitor reads it from the
// state record): the current downtime goes on from there instead of from zero. The total
// is the caller's to carry (it counts only what this Downtime sees).
func ResumeDowntime(start time.Time, current time.Duration) *Downtime {
	d := NewDowntime(start)
	if current > 0 {
		d.lastUp = start.Add(-current)
		d.current = current
		d.down = true
	}
	return d
}

// ResumeOutage starts the bookkeeping at now for a monitor that takes over an outage that
// began at since (wall time, kept in the state record by the monitor that saw it begin):
// the current downtime is now minus since, whatever the restart in between cost, and the
// bookkeeping starts down. A since after now (the clock went back) is taken as now. The
// total is the caller's to carry, as for ResumeDowntime.
func ResumeOutage(now, since time.Time) *Downtime {
	d := NewDowntime(now)
	cur := nonNegative(now.Sub(since))
	d.lastUp = now.Add(-cur)
	d.current = cur
	d.down = true
	return d
}

// Round records the outcome of a round that ended at now. It returns the time since the
// previous successful round (or the start): after failed rounds, a successful one
// returns the length of the outage it ends.
func (d *Downtime) Round(ok bool, now time.Time) (sinceUp time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	sinceUp = nonNegative(now.Sub(d.lastUp))
	d.down = !ok
	if ok {
		d.lastUp = now
		d.current = 0
	} else {
		d.current = sinceUp
		d.total += nonNegative(now.Sub(d.lastChecked))
	}
	d.lastChecked = now
	return sinceUp
}

func nonNegative(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// CurrentMs is compute_pg_current_downtime_ms: 0 while Postgres is up.
func (d *Downtime) CurrentMs() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.current.Milliseconds()
}

// TotalMs is compute_pg_downtime_ms_total since the monitor started.
func (d *Downtime) TotalMs() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total.Milliseconds()
}

// Down says whether Postgres is down for the bookkeeping: the last round failed, or an
// outage was resumed and no round succeeded since.
func (d *Downtime) Down() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.down
}

// DownSince is when the current outage began (the end of the last successful round, or
// the start), and whether there is one.
func (d *Downtime) DownSince() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastUp, d.down
}
