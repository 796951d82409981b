package monitor

import (
	"context"
	"slices"
	"time"
)

// FeatureStatsDelta is the spec feature (`features` in the compute spec) that turns on the
// pg_stat_database delta rule, as in the reference.
const FeatureStatsDelta = "activity_monitor_experimental"

// StatsDeltaEnabled reports whether a spec's features turn on the stats-delta rule.
func StatsDeltaEnabled(features []string) bool {
	return slices.Contains(features, FeatureStatsDelta)
}

// Reason says which rule decided a sample.
type Reason string

// The rules, in the order a sample tries them.
const (
	// ReasonNone: no rule saw activity newer than the sampler's last value.
	ReasonNone Reason = ""
	// ReasonStats: pg_stat_database's active_time or sessions changed since the last sample.
	ReasonStats Reason = "stats"
	// ReasonBackendActive: a client backend of another role than the admin is not idle.
	ReasonBackendActive Reason = "backend_active"
	// ReasonBackendIdle: the newest state_change of the idle client backends is newer.
	ReasonBackendIdle Reason = "backend_idle"
	// ReasonWalsender: a walsender other than walproposer is connected.
	ReasonWalsender Reason = "walsender"
	// ReasonSubscription: a subscription has a running worker.
	ReasonSubscription Reason = "subscription"
	// ReasonAutovacuum: an autovacuum worker runs.
	ReasonAutovacuum Reason = "autovacuum"
)

// Sample is the outcome of one successful sample.
type Sample struct {
	// At is the sampler's clock when the sample was decided.
	At time.Time
	// LastActive is the sampler's last activity time after this sample (the reference's
	// monitor-local last_active); zero while no activity was ever seen. It can be older
	// than a value published before (after a restart of the monitor): Tracker keeps the
	// published value from going back.
	LastActive time.Time
	// Reason is the rule that moved LastActive in this sample, ReasonNone if none did.
	Reason Reason
}

// Sampler decides one activity sample at a time, as the reference's check does. It keeps
// what the rules compare against between samples (the last activity time and the last
// pg_stat_database counters), so one Sampler serves a whole monitor process, across
// reconnections. It is not safe for concurrent use.
type Sampler struct {
	// StatsDelta turns on the pg_stat_database delta rule (StatsDeltaEnabled).
	StatsDelta bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	last      time.Time
	prevStats *DatabaseStats
}

func (s *Sampler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Sample reads src and decides, stopping at the first rule that sees activity:
//
//  1. with StatsDelta: active_time or sessions differ from the previous sample's (the
//     first sample only records them) -> now;
//  2. a client backend (not the admin role, not ours) whose state is not idle -> now;
//     otherwise the newest state_change of the idle ones, if newer than the last value;
//  3. a walsender other than walproposer -> now;
//  4. a subscription with a running worker -> now;
//  5. an autovacuum worker -> now.
//
// An error from any query fails the sample (the round counts as down); the last value
// is unchanged then.
func (s *Sampler) Sample(ctx context.Context, src Source) (Sample, error) {
	if s.StatsDelta {
		st, err := src.DatabaseStats(ctx)
		if err != nil {
			return Sample{}, err
		}
		changed := statsChanged(s.prevStats, st)
		s.prevStats = &st
		if changed {
			return s.moved(s.now(), ReasonStats), nil
		}
	}
	backs, err := src.Backends(ctx)
	if err != nil {
		return Sample{}, err
	}
	now := s.now()
	if t, reason := backendsActivity(backs, now); reason != ReasonNone && t.After(s.last) {
		return s.moved(t, reason), nil
	}
	counts := []struct {
		reason Reason
		count  func(context.Context) (int64, error)
	}{
		{ReasonWalsender, src.Walsenders},
		{ReasonSubscription, src.Subscriptions},
		{ReasonAutovacuum, src.AutovacuumWorkers},
	}
	for _, c := range counts {
		n, err := c.count(ctx)
		if err != nil {
			return Sample{}, err
		}
		if n > 0 {
			return s.moved(s.now(), c.reason), nil
		}
	}
	return Sample{At: now, LastActive: s.last, Reason: ReasonNone}, nil
}

// moved records t as the last activity (rules 1 and 3-5 give "now", which may still not
// be after the last value on a clock that went back; the value never goes back).
func (s *Sampler) moved(t time.Time, reason Reason) Sample {
	if t.After(s.last) {
		s.last = t
	}
	return Sample{At: s.now(), LastActive: s.last, Reason: reason}
}

// statsChanged is rule 1: any change of either counter, in either direction (a dropped
// database makes them go down, which is activity too); nothing on the first sample.
func statsChanged(prev *DatabaseStats, cur DatabaseStats) bool {
	return prev != nil && (prev.ActiveTime != cur.ActiveTime || prev.Sessions != cur.Sessions)
}

// backendsActivity is rule 2 without the "newer than the last value" comparison: now and
// ReasonBackendActive if a backend has a state other than idle; else the newest
// state_change of the idle backends and ReasonBackendIdle; else ReasonNone. Rows without
// a state are skipped, and idle rows without a state_change, as in the reference.
func backendsActivity(backs []Backend, now time.Time) (time.Time, Reason) {
	var newest time.Time
	found := false
	for _, b := range backs {
		if b.State == nil {
			continue
		}
		if *b.State != "idle" {
			return now, ReasonBackendActive
		}
		if b.StateChange == nil {
			continue
		}
		if !found || b.StateChange.After(newest) {
			newest, found = *b.StateChange, true
		}
	}
	if !found {
		return time.Time{}, ReasonNone
	}
	return newest.UTC(), ReasonBackendIdle
}
