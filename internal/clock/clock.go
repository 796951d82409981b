// Package clock is the real clock behind the tickers of the monitors' round loops
// (internal/monitor's Loop, the vm-monitor's cgroup watcher): each consumer declares the
// narrow Clock interface it needs, in terms of the Ticker here, and its tests drive a fake.
package clock

import "time"

// Ticker is a running ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// System is the real clock.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// NewTicker returns a time.Ticker behind Ticker.
func (System) NewTicker(d time.Duration) Ticker { return sysTicker{time.NewTicker(d)} }

type sysTicker struct{ t *time.Ticker }

func (s sysTicker) C() <-chan time.Time { return s.t.C }
func (s sysTicker) Stop()               { s.t.Stop() }
