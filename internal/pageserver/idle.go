package pageserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout bounds how long a pageserver connection may stay silent (connect,
// authentication, the basebackup stream, a lease answer) before the attempt is given up.
// compute_ctl has no such bound; it is above the pageserver's own wait for a missing LSN
// (wait_lsn_timeout, 60 s by default), so that a pageserver that waits for WAL is not cut
// off before it answers with its own error.
const DefaultIdleTimeout = 2 * time.Minute

// StallError says the pageserver sent nothing for Idle: a stall, not a slow transfer.
type StallError struct {
	Idle time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("pageserver stalled: no data for %s", e.Idle)
}

// idleDialer dials connections whose reads fail once the peer has been silent for idle.
// It remembers whether that happened, so that the attempt can report a StallError
// instead of pgconn's generic "i/o timeout".
type idleDialer struct {
	idle    time.Duration
	stalled atomic.Bool
}

func (d *idleDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: d.idle, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &idleConn{Conn: c, d: d}, nil
}

// stallErr is the StallError when this dialer's connection timed out for silence.
func (d *idleDialer) stallErr() error {
	if d.stalled.Load() {
		return &StallError{Idle: d.idle}
	}
	return nil
}

// idleConn moves its read deadline forward before every read: a read fails when no byte
// came for idle. pgconn sets deadlines of its own (a cancelled context sets one in the
// past, and clears it afterwards); the earlier of the two applies.
type idleConn struct {
	net.Conn
	d *idleDialer

	mu  sync.Mutex
	ext time.Time // the deadline pgconn asked for (zero: none)
}

func (c *idleConn) Read(p []byte) (int, error) {
	own := time.Now().Add(c.d.idle)
	c.mu.Lock()
	dl := own
	if !c.ext.IsZero() && c.ext.Before(own) {
		dl = c.ext
	}
	err := c.Conn.SetReadDeadline(dl)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// Ours only when the idle time really passed and pgconn set no earlier deadline
		// meanwhile (a cancelled context moves the deadline of a read in flight).
		c.mu.Lock()
		ext := c.ext
		c.mu.Unlock()
		if !time.Now().Before(own) && (ext.IsZero() || !ext.Before(own)) {
			c.d.stalled.Store(true)
		}
	}
	return n, err
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.ext = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.ext = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}
