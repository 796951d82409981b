package pgwire

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestServer(t *testing.T) {
	var handled atomic.Int32
	s, err := Listen(func(c net.Conn) {
		handled.Add(1)
		_, _ = io.Copy(io.Discard, c) // until the client or Close drops it
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for handled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if handled.Load() != 1 {
		t.Fatal("the handler did not run")
	}

	// Refuse: the open connection stays, new ones are refused.
	s.Refuse()
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("a connection was accepted after Refuse")
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Errorf("the open connection was dropped by Refuse: %v", err)
	}

	// Close drops the open connection and waits for its handler (it would hang otherwise).
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done is not closed after Close")
	}
	s.Close() // idempotent
}
