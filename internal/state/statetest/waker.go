package statetest

import "sync"

// Waker stands in for the D-Bus status signal in tests: Notify wakes every open
// subscription (set it as the store's OnChange to wake on every write). The zero value is
// ready to use.
type Waker struct {
	mu   sync.Mutex
	subs map[int]chan struct{}
	next int
}

// Subscribe returns a wake-up channel (coalescing: one pending wake-up at most) and the
// function that closes the subscription; calling it twice is harmless.
func (w *Waker) Subscribe() (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs == nil {
		w.subs = map[int]chan struct{}{}
	}
	id := w.next
	w.next++
	ch := make(chan struct{}, 1)
	w.subs[id] = ch
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	}
}

// Notify wakes every open subscription.
func (w *Waker) Notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Open is the number of subscriptions not closed yet.
func (w *Waker) Open() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}
