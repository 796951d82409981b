package api

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

// liftDeadlines lets a long route (routeEntry.long) answer after the server's write
// timeout: it removes the connection's write deadline and, for a request without a
// body, its read deadline (a route with a body lifts that once it has read it, with
// liftReadDeadline). An expired read deadline would otherwise end the request's context
// (net/http's background read fails), which a waiting route takes for a client that gave
// up. A writer that cannot (a test's recorder) is left as it is.
func liftDeadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{})
		if r.Body == nil || r.Body == http.NoBody {
			_ = rc.SetReadDeadline(time.Time{})
		}
		h.ServeHTTP(w, r)
	})
}

// liftReadDeadline removes the read deadline of a long route's connection once its body
// is read.
func liftReadDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}

// gate admits at most n holders at once; the others wait.
type gate struct {
	slots   chan struct{}
	waiting atomic.Int32
}

func newGate(n int) *gate { return &gate{slots: make(chan struct{}, n)} }

// enter waits for a slot; false when ctx ended first. The caller calls leave after a
// successful enter.
func (g *gate) enter(ctx context.Context) bool {
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	select {
	case g.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *gate) leave() { <-g.slots }
