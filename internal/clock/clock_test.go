package clock

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// System's ticker is a timerfd on Linux and ticks with increasing times.
func TestSystemTicker(t *testing.T) {
	tk := System{}.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	if _, ok := tk.(*fdTicker); !ok {
		t.Fatalf("System.NewTicker returned %T, want the timerfd ticker", tk)
	}
	var last time.Time
	for i := 0; i < 3; i++ {
		select {
		case now := <-tk.C():
			if !now.After(last) {
				t.Fatalf("tick %d at %v, not after %v", i, now, last)
			}
			last = now
		case <-time.After(10 * time.Second):
			t.Fatalf("no tick %d in 10 s", i)
		}
	}
}

// Stop closes the descriptor and ends the goroutine that reads it; no tick comes after
// it, not even one that was pending.
func TestSystemTickerStop(t *testing.T) {
	// A first ticker makes the runtime's poller (its epoll and event descriptors), which
	// would otherwise be counted as the ticker's.
	System{}.NewTicker(time.Hour).Stop()
	goroutines := runtime.NumGoroutine()
	before := openFDs(t)
	tk := System{}.NewTicker(time.Millisecond).(*fdTicker)
	if openFDs(t) != before+1 {
		t.Fatalf("descriptors %d, want %d (one timerfd)", openFDs(t), before+1)
	}
	<-tk.C()
	time.Sleep(5 * time.Millisecond) // let a tick be pending
	tk.Stop()
	tk.Stop() // a second Stop is harmless
	if got := openFDs(t); got != before {
		t.Errorf("descriptors after Stop %d, want %d", got, before)
	}
	// The goroutine that read the descriptor ends.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > goroutines; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 10 s after Stop, %d before the ticker", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-tk.C():
		t.Error("a tick after Stop")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSystemTickerPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewTicker(0) did not panic")
		}
	}()
	System{}.NewTicker(0)
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			if l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); l != "" {
				n++
			}
		}
	}
	return n
}
