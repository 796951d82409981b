package apiserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostPort is the host:port of a base URL.
func hostPort(base string) string { return strings.TrimPrefix(base, "http://") }

// closedByServer reports whether the server closed c, waiting at most wait for it.
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadAll(c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// getMetrics asks GET /metrics (open) on a new connection.
func getMetrics(t *testing.T, base string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("real request: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Idle and slowloris connections cannot pin the external port: past the connection limit
// the oldest of them are closed, and a real request still gets through (the header
// timeout is long here, so the limit alone does it).
func TestIdleAndSlowConnectionsDoNotPinTheServer(t *testing.T) {
	const max, idle, slow = 8, 40, 40
	cfg := testConfig(t)
	cfg.HTTP = HTTPLimits{MaxConnections: max, ReadHeaderTimeout: time.Hour, ReadTimeout: time.Hour, IdleTimeout: time.Hour}
	r := start(t, cfg)
	addr := hostPort(r.ext)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range idle + slow {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if i >= idle { // slowloris: a request begun and never finished
			if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				t.Fatal(err)
			}
		}
	}
	if code := getMetrics(t, r.ext); code != http.StatusOK {
		t.Fatalf("real request: %d", code)
	}
	// Every connection the server accepted after the first max closed one before it.
	closed := make([]bool, len(held))
	var wg sync.WaitGroup
	for i, c := range held {
		wg.Go(func() { closed[i] = closedByServer(c, 2*time.Second) })
	}
	wg.Wait()
	n := 0
	for _, ok := range closed {
		if ok {
			n++
		}
	}
	if n < len(held)-(max-1) {
		t.Fatalf("%d of %d idle and slow connections closed; at most %d may stay open", n, len(held), max-1)
	}
	if open := r.s.limitOpen(); open > max {
		t.Fatalf("%d connections counted, limit %d", open, max)
	}
}

// A connection in a handler is never closed for a new one; when every slot is in a
// handler, the new connection is refused instead.
func TestConnLimitSparesBusyConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimit(1)
	inHandler, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: l.track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(inHandler)
			<-release
		}
	})), ConnContext: connContext, ConnState: l.connState}
	go srv.Serve(l.listener(ln))
	defer srv.Close()
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := io.WriteString(busy, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-inHandler
	extra, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedByServer(extra, 5*time.Second) {
		t.Fatal("a connection past the limit was kept while the only slot is in a handler")
	}
	close(release)
	br := bufio.NewReader(busy)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the busy connection's answer: %v %v", resp, err)
	}
	resp.Body.Close()
	// Answered, it is idle (once net/http says so, just after the answer went out): the
	// next connection takes its place.
	for busyConns(l) != 0 {
		time.Sleep(time.Millisecond)
	}
	next, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if _, err := io.WriteString(next, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(next), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the next connection's answer: %v %v", resp, err)
	}
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the idle connection was kept past the limit")
	}
}

// The timeouts close a silent connection, a slowloris that keeps sending header bytes,
// and a kept-alive connection left idle, on both ports.
func TestTimeoutsCloseStalledConnections(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP = HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: time.Hour, IdleTimeout: 300 * time.Millisecond}
	r := start(t, cfg)
	for _, base := range []string{r.ext, r.int} {
		silent, err := net.Dial("tcp", hostPort(base))
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		drip, err := net.Dial("tcp", hostPort(base))
		if err != nil {
			t.Fatal(err)
		}
		defer drip.Close()
		stop := make(chan struct{})
		go func() {
			_, _ = io.WriteString(drip, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := io.WriteString(drip, "X-A: b\r\n"); err != nil {
						return
					}
				}
			}
		}()
		kept, err := net.Dial("tcp", hostPort(base))
		if err != nil {
			t.Fatal(err)
		}
		defer kept.Close()
		if _, err := io.WriteString(kept, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(kept)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		for name, c := range map[string]net.Conn{"silent": silent, "slowloris": drip} {
			if !closedByServer(c, 5*time.Second) {
				t.Errorf("%s: %s connection not closed", base, name)
			}
		}
		_ = kept.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: idle kept-alive connection not closed", base)
		}
		close(stop)
	}
}

// busyConns is the number of connections l counts as answering.
func busyConns(l *connLimit) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.busy {
			n++
		}
	}
	return n
}
