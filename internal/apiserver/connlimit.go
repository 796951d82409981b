package apiserver

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// connLimit bounds the open connections of a port. When a new connection would pass the
// bound, the oldest open connection that is not being answered (idle between requests,
// or still sending its request: a slow or silent client, authenticated or not) is closed
// to make room; when every connection is in a handler, the new one is closed instead.
// Idle and slow clients therefore cannot pin the server: they make room for the next
// caller instead of holding it out, while the timeouts of the http.Server close them in
// any case. A connection counts as answering from the moment its handler starts (track)
// until net/http reports it idle again, its answer sent (connState), so a request is safe
// from eviction once its headers are read.
type connLimit struct {
	max int

	mu    sync.Mutex
	seq   uint64
	conns map[*limitedConn]struct{}
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, conns: make(map[*limitedConn]struct{})}
}

// listener wraps ln so that its connections are counted.
func (l *connLimit) listener(ln net.Listener) net.Listener { return &limitListener{Listener: ln, l: l} }

// limitedConn is a counted connection.
type limitedConn struct {
	net.Conn
	l     *connLimit
	order uint64
	// busy: a request is being answered on it (guarded by l.mu).
	busy      bool
	closeOnce sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

type limitListener struct {
	net.Listener
	l *connLimit
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ln.l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c, closing the oldest connection that is not in a handler when the bound
// is reached; nil when every counted connection is in a handler (c is closed).
func (l *connLimit) admit(c net.Conn) *limitedConn {
	l.mu.Lock()
	var victim *limitedConn
	if len(l.conns) >= l.max {
		for o := range l.conns {
			if !o.busy && (victim == nil || o.order < victim.order) {
				victim = o
			}
		}
		if victim == nil {
			l.mu.Unlock()
			c.Close()
			return nil
		}
		delete(l.conns, victim)
	}
	l.seq++
	lc := &limitedConn{Conn: c, l: l, order: l.seq}
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		victim.Close()
	}
	return lc
}

// open is the number of counted connections.
func (l *connLimit) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

type connKey struct{}

// connContext is the http.Server's ConnContext: it lets track find a request's connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitedConn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// track marks a request's connection as answering when its handler starts.
func (l *connLimit) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lc, _ := r.Context().Value(connKey{}).(*limitedConn); lc != nil {
			l.mu.Lock()
			lc.busy = true
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// connState is the http.Server's ConnState: a connection is answering no more once it
// is idle again (its answer written out) or gone.
func (l *connLimit) connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok || (st != http.StateIdle && st != http.StateClosed && st != http.StateHijacked) {
		return
	}
	l.mu.Lock()
	lc.busy = false
	l.mu.Unlock()
}
