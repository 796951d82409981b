package monitor

import (
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2025, 7, 17, 10, 0, 0, 0, time.UTC)

func TestStatsChanged(t *testing.T) {
	base := DatabaseStats{ActiveTime: 12.5, Sessions: 3}
	tests := []struct {
		name string
		prev *DatabaseStats
		cur  DatabaseStats
		want bool
	}{
		{"first sample only records", nil, base, false},
		{"unchanged", &base, base, false},
		{"active_time up", &base, DatabaseStats{13, 3}, true},
		{"sessions up", &base, DatabaseStats{12.5, 4}, true},
		{"both down (a database dropped)", &base, DatabaseStats{1, 1}, true},
		{"zero to zero", &DatabaseStats{}, DatabaseStats{}, false},
	}
	for _, tc := range tests {
		if got := statsChanged(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: statsChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBackendsActivity(t *testing.T) {
	now := t0.Add(time.Hour)
	idle := func(d time.Duration) Backend { return Backend{State: ptr("idle"), StateChange: ptr(t0.Add(d))} }
	zone := time.FixedZone("NZ", 13*3600)
	tests := []struct {
		name   string
		backs  []Backend
		want   time.Time
		reason Reason
	}{
		{"no backends", nil, time.Time{}, ReasonNone},
		{"one idle", []Backend{idle(time.Second)}, t0.Add(time.Second), ReasonBackendIdle},
		{"newest idle wins", []Backend{idle(time.Second), idle(3 * time.Second), idle(2 * time.Second)}, t0.Add(3 * time.Second), ReasonBackendIdle},
		{"active beats idle", []Backend{idle(time.Second), {State: ptr("active")}}, now, ReasonBackendActive},
		{"idle in transaction is active", []Backend{{State: ptr("idle in transaction"), StateChange: ptr(t0)}}, now, ReasonBackendActive},
		{"aborted transaction is active", []Backend{{State: ptr("idle in transaction (aborted)")}}, now, ReasonBackendActive},
		{"fastpath is active", []Backend{{State: ptr("fastpath function call")}}, now, ReasonBackendActive},
		{"null state skipped", []Backend{{StateChange: ptr(t0.Add(time.Minute))}, idle(time.Second)}, t0.Add(time.Second), ReasonBackendIdle},
		{"only null states", []Backend{{}, {}}, time.Time{}, ReasonNone},
		{"idle without state_change skipped", []Backend{{State: ptr("idle")}}, time.Time{}, ReasonNone},
		{"another zone is the same instant, in UTC", []Backend{{State: ptr("idle"), StateChange: ptr(t0.In(zone))}}, t0, ReasonBackendIdle},
	}
	for _, tc := range tests {
		got, reason := backendsActivity(tc.backs, now)
		if !got.Equal(tc.want) || reason != tc.reason {
			t.Errorf("%s: = %v, %q; want %v, %q", tc.name, got, reason, tc.want, tc.reason)
		}
		if !got.IsZero() && got.Location() != time.UTC {
			t.Errorf("%s: location %v, want UTC", tc.name, got.Location())
		}
	}
}

func TestStatsDeltaEnabled(t *testing.T) {
	if StatsDeltaEnabled(nil) || StatsDeltaEnabled([]string{"tls_experimental"}) {
		t.Error("enabled without the feature")
	}
	if !StatsDeltaEnabled([]string{"tls_experimental", "activity_monitor_experimental"}) {
		t.Error("not enabled with the feature")
	}
}
