package statetest

import "testing"

func TestWaker(t *testing.T) {
	var w Waker
	a, cancelA := w.Subscribe()
	b, cancelB := w.Subscribe()
	if w.Open() != 2 {
		t.Fatalf("open %d", w.Open())
	}
	w.Notify()
	w.Notify() // coalesced
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("no wake-up")
		}
		select {
		case <-ch:
			t.Fatal("a second wake-up was not coalesced")
		default:
		}
	}
	cancelA()
	cancelA()
	w.Notify()
	select {
	case <-a:
		t.Error("a closed subscription was woken")
	default:
	}
	<-b
	cancelB()
	if w.Open() != 0 {
		t.Errorf("open %d after both closed", w.Open())
	}
}
