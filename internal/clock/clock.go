// Package clock is the real clock behind the tickers of the monitors' round loops
// (internal/monitor's Loop, the vm-monitor's cgroup watcher): each consumer declares the
// narrow Clock interface it needs, in terms of the Ticker here, and its tests drive a fake.
//
// System's tickers are Linux timer file descriptors read through the Go runtime's poller
// rather than time.Ticker: when a Go timer fires, the runtime wakes two threads (the one
// that runs the timer and sysmon, which sleeps until the next timer), when a timerfd
// becomes readable only the thread blocked in the poller wakes. On this project's 2-core
// development VM (nested virtualisation, where every wake-up is expensive) a 100 ms
// ticker costs 0.09-0.12% of a core as a timerfd against 0.16-0.18% as a time.Ticker
// (bench/README.md): for the vm-monitor, which samples its cgroup ten times a second
// for as long as the VM runs, that is most of its CPU.
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

// NewTicker returns a ticker with period d on a timer file descriptor (see the package
// comment), or a time.Ticker when the kernel refuses one. It panics when d <= 0, as
// time.NewTicker does.
func (System) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	if t, err := newFDTicker(d); err == nil {
		return t
	}
	return sysTicker{time.NewTicker(d)}
}

type sysTicker struct{ t *time.Ticker }

func (s sysTicker) C() <-chan time.Time { return s.t.C }
func (s sysTicker) Stop()               { s.t.Stop() }
