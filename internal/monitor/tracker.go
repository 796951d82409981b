package monitor

import (
	"sync"
	"time"
)

// DefaultPublishInterval is the shortest time between two publications of last_active by
// default: a busy compute moves it at every sample (every 500 ms), and each publication is
// an fsynced write of the state record; the control plane's suspend timeout counts in
// seconds (minutes in practice), so one second of lag costs nothing.
const DefaultPublishInterval = time.Second

// Tracker holds the compute's last activity time, the value GET /status reports as
// last_active (statusview formats it), and decides when a coalescing publisher writes it.
//
// The value only moves forward. The publication rule: publish when the value differs
// from the one last published and at least Interval passed since the last publication
// (the first publication is due at once). A publication that failed is not marked, so
// it is due again at the next look. What /status shows therefore lags the monitor by at
// most Interval plus one round.
//
// A Tracker is safe for concurrent use (the loop observes, a publisher may run beside it).
type Tracker struct {
	interval time.Duration

	mu          sync.Mutex
	value       time.Time // zero: never active
	published   time.Time // the value last published (or the seed)
	publishedAt time.Time // the clock at the last publication; zero: never
}

// NewTracker returns a tracker that starts from seed (the last_active already in the
// state record, zero if none: a restarted monitor never moves it back) and publishes at
// most once per interval (<= 0 means DefaultPublishInterval). The seed counts as
// published.
func NewTracker(seed time.Time, interval time.Duration) *Tracker {
	if interval <= 0 {
		interval = DefaultPublishInterval
	}
	return &Tracker{interval: interval, value: seed, published: seed}
}

// Observe offers a sample's last activity time; it reports whether the value moved (t is
// after the current value). A zero t never moves it.
func (t *Tracker) Observe(v time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v.IsZero() || !v.After(t.value) {
		return false
	}
	t.value = v
	return true
}

// Value is the current last activity time; ok is false while there was none (/status
// answers null then).
func (t *Tracker) Value() (v time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value, !t.value.IsZero()
}

// Due returns the value to publish now, and whether a publication is due at now (the
// publisher's clock): the value differs from the one last published and the last
// publication was at least the interval ago.
func (t *Tracker) Due(now time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.value.Equal(t.published) {
		return time.Time{}, false
	}
	if !t.publishedAt.IsZero() && now.Sub(t.publishedAt) < t.interval {
		return time.Time{}, false
	}
	return t.value, true
}

// Pending returns the value and whether it differs from the one last published, whatever
// the interval: for a last publication at shutdown.
func (t *Tracker) Pending() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value, !t.value.Equal(t.published)
}

// Published records that v was written at now. A v older than one already published
// (publications that raced) does not move the mark back.
func (t *Tracker) Published(v, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v.After(t.published) {
		t.published = v
	}
	t.publishedAt = now
}
