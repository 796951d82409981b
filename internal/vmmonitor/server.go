package vmmonitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Defaults of Config, and the fixed parts of the transport.
const (
	// Path is the one HTTP path the agent upgrades to a WebSocket.
	Path = "/monitor"
	// DefaultPort is the port the agent dials (its monitor.serverPort), and our default
	// vsock port.
	DefaultPort = 10301
	// DefaultHandshakeTimeout bounds a connection's start from the accept: the version
	// handshake and Policy.Reset (the reference's 4 s around Runner::new; the agent
	// allows 4 s, connectionTimeoutSeconds, for its dial and the handshake).
	DefaultHandshakeTimeout = 4 * time.Second
	// DefaultCallTimeout bounds one Policy call: the agent waits 5 s for an answer
	// (responseTimeoutSeconds) and refuses one that comes later as an unknown id.
	DefaultCallTimeout = 5 * time.Second
	// DefaultUpscaleRequestInterval is the least time between two UpscaleRequests on
	// one connection (the reference's 1 s, neon PR #5263).
	DefaultUpscaleRequestInterval = time.Second
	// DefaultWriteTimeout bounds sending one frame.
	DefaultWriteTimeout = 5 * time.Second
)

// Config configures a Server. Policy and Logger are required; zero durations take the
// defaults above.
type Config struct {
	Policy Policy
	// Logger is the component logger ("component", "vm-monitor" or the like).
	Logger *slog.Logger

	HandshakeTimeout       time.Duration
	CallTimeout            time.Duration
	UpscaleRequestInterval time.Duration
	WriteTimeout           time.Duration
	// Now is the clock of the upscale request rate limit (time.Now when nil).
	Now func() time.Time
	// OnConnect, when set, is called after each agent connection's handshake.
	OnConnect func()
}

// Server serves the autoscaler agent: the WebSocket at Path, one agent connection at
// a time, on any number of listeners (Serve once per listener; the one-connection rule
// spans them all).
type Server struct {
	cfg     Config
	log     *slog.Logger
	policy  Policy
	upscale <-chan struct{}
	// policySem serialises the Policy calls of all connections; a semaphore rather
	// than a mutex so that a wait can end with its ctx.
	policySem chan struct{}

	mu      sync.Mutex
	current *conn
	seq     uint64
}

// New returns a Server; it reads cfg.Policy.UpscaleRequests once.
func New(cfg Config) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.UpscaleRequestInterval <= 0 {
		cfg.UpscaleRequestInterval = DefaultUpscaleRequestInterval
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		policy:    cfg.Policy,
		upscale:   cfg.Policy.UpscaleRequests(),
		policySem: make(chan struct{}, 1),
	}
}

// Serve accepts agent connections on ln until ctx ends, then closes ln and the
// connections it accepted (close status 1001) and returns nil once they are done. It
// returns an error, having closed them too, when ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	serveCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu     sync.Mutex
		closed bool
		wg     sync.WaitGroup
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if closed {
			mu.Unlock()
			http.Error(w, "vm-monitor is stopping", http.StatusServiceUnavailable)
			return
		}
		wg.Add(1)
		mu.Unlock()
		defer wg.Done()
		s.handle(w, r)
	})
	hs := &http.Server{
		Handler:           mux,
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("serving the autoscaler agent", "addr", ln.Addr().String(), "path", Path)

	var err error
	select {
	case <-ctx.Done():
		hs.Close()
		<-errc
	case err = <-errc:
		hs.Close()
		err = fmt.Errorf("serve agent connections on %s: %w", ln.Addr(), err)
	}
	mu.Lock()
	closed = true
	mu.Unlock()
	cancel()
	wg.Wait()
	return err
}

// handle upgrades one request and serves the connection until it ends.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		// Accept has answered the request with the reason.
		s.log.Warn("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	s.mu.Lock()
	s.seq++
	n := s.seq
	s.mu.Unlock()
	log := s.log.With("conn", n, "remote", r.RemoteAddr)
	s.serveConn(r.Context(), ws, log, start.Add(s.cfg.HandshakeTimeout))
}

// serveConn runs one agent connection: the handshake, the replacement of the previous
// connection, Policy.Reset, then the messages until the connection ends.
func (s *Server) serveConn(ctx context.Context, ws *websocket.Conn, log *slog.Logger, deadline time.Time) {
	defer ws.CloseNow()
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	version, err := s.handshake(hctx, ws)
	if err != nil {
		log.Warn("agent handshake failed", "err", err)
		ws.Close(websocket.StatusProtocolError, "protocol handshake failed")
		return
	}

	// The new connection replaces the old one before the agent learns the version: an
	// agent that has its answer is the current connection, whatever comes after it.
	c := &conn{s: s, ws: ws, log: log, work: make(chan inbound, 16), lastID: 1}
	c.ctx, c.cancel = context.WithCancel(ctx)
	defer c.cancel()
	s.replace(c)
	defer s.release(c)
	if err := writeJSON(hctx, ws, protocolResponse{Version: version}); err != nil {
		log.Warn("agent handshake failed", "err", fmt.Errorf("send the protocol version: %w", err))
		c.end(websocket.StatusProtocolError, "protocol handshake failed")
		c.close()
		return
	}
	log.Info("agent connected", "version", version.String())
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect()
	}

	rctx, rcancel := context.WithDeadline(c.ctx, deadline)
	err = s.withPolicy(rctx, func() error { return s.policy.Reset(rctx) })
	rcancel()
	if err != nil {
		if c.ctx.Err() == nil {
			log.Error("policy reset for the new connection failed", "err", err)
		}
		c.end(websocket.StatusInternalError, "vm-monitor could not start")
		c.close()
		log.Info("agent connection ended", "reason", c.reason)
		return
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.readLoop()
	}()
	c.workLoop()
	// The connection ends here (c.ctx is done): by end(), or because the server stops.
	c.end(websocket.StatusGoingAway, "vm-monitor is stopping")
	c.close()
	<-readerDone
	log.Info("agent connection ended", "reason", c.reason)
}

// handshake reads the agent's version range and decides the version; when there is
// none, it answers {"error":"..."} and returns the error. The caller sends the
// {"version":N} of a success.
func (s *Server) handshake(ctx context.Context, ws *websocket.Conn) (ProtocolVersion, error) {
	typ, data, err := ws.Read(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the protocol version range: %w", err)
	}
	var v ProtocolVersion
	if typ != websocket.MessageText {
		err = fmt.Errorf("received a %s frame as the protocol version range, not text", typ)
	} else {
		v, err = negotiate(data)
	}
	if err != nil {
		text := err.Error()
		if werr := writeJSON(ctx, ws, protocolResponse{Error: &text}); werr != nil {
			return 0, fmt.Errorf("%w (and sending the error failed: %v)", err, werr)
		}
		return 0, err
	}
	return v, nil
}

// replace makes c the current connection and ends the previous one.
func (s *Server) replace(c *conn) {
	s.mu.Lock()
	old := s.current
	s.current = c
	s.mu.Unlock()
	if old != nil {
		old.log.Info("agent connection replaced by a newer one")
		old.end(websocket.StatusNormalClosure, "replaced by a newer connection")
	}
}

// release forgets c if it is still the current connection.
func (s *Server) release(c *conn) {
	s.mu.Lock()
	if s.current == c {
		s.current = nil
	}
	s.mu.Unlock()
}

// withPolicy runs f with the Policy to itself, or gives up when ctx ends first.
func (s *Server) withPolicy(ctx context.Context, f func() error) error {
	select {
	case s.policySem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for the previous policy call: %w", context.Cause(ctx))
	}
	defer func() { <-s.policySem }()
	return f()
}

// conn is one agent connection after its handshake. Its reader goroutine answers
// health checks and hands upscale and downscale messages to the work loop, which calls
// the Policy one message at a time, in order, and sends the UpscaleRequests.
type conn struct {
	s   *Server
	ws  *websocket.Conn
	log *slog.Logger
	// ctx ends with the connection; the Policy calls made for it derive from it.
	ctx    context.Context
	cancel context.CancelFunc
	work   chan inbound

	endOnce sync.Once
	code    websocket.StatusCode
	reason  string

	// Work loop only: the last id the monitor sent (odd: it starts at 1 and grows by
	// 2 before each send), and when the last UpscaleRequest went out.
	lastID         uint64
	lastUpscaleReq time.Time
	upscaleReqSent bool
}

// end ends the connection with a close status and reason; the first call decides them.
func (c *conn) end(code websocket.StatusCode, reason string) {
	c.endOnce.Do(func() {
		c.code, c.reason = code, reason
		c.cancel()
	})
}

// close sends the close frame chosen by end and waits (5 s at most each way, the
// library's bound) for the agent's.
func (c *conn) close() {
	if err := c.ws.Close(c.code, c.reason); err != nil && !errors.Is(err, net.ErrClosed) {
		c.log.Debug("close the agent connection", "err", err)
	}
}

func (c *conn) readLoop() {
	for {
		// Not c.ctx: a cancelled read drops the connection without a close frame. The
		// read ends when close() closes the connection.
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			if status := websocket.CloseStatus(err); status != -1 {
				c.end(websocket.StatusNormalClosure, fmt.Sprintf("agent closed the connection (status %d)", status))
			} else {
				if c.ctx.Err() == nil {
					c.log.Warn("read from the agent failed", "err", err)
				}
				c.end(websocket.StatusInternalError, "read failed")
			}
			return
		}
		if typ != websocket.MessageText {
			c.log.Warn("agent sent a non-text frame; ignored", "frame", typ.String(), "bytes", len(data))
			continue
		}
		m, err := decodeInbound(data)
		if err != nil {
			var de *decodeError
			errors.As(err, &de)
			if de.Unknown {
				c.log.Warn("agent sent a message of unknown type", "type", de.Type, "id", de.ID)
				c.send(msgInvalidMessage(de.ID, de.Err.Error()))
				continue
			}
			c.log.Warn("undecodable message from the agent; dropping the connection", "err", err, "bytes", len(data))
			if de.HasID {
				c.send(msgInvalidMessage(de.ID, "undecodable message: "+err.Error()))
			}
			c.end(websocket.StatusProtocolError, "undecodable message")
			return
		}
		switch m.Type {
		case typeHealthCheck:
			c.log.Debug("health check", "id", m.ID)
			c.send(msgHealthCheck(m.ID))
		case typeInvalidMessage:
			c.log.Warn("agent says a message we sent was invalid", "id", m.ID, "agent_error", m.Error)
		case typeInternalError:
			c.log.Warn("agent reports an internal error", "id", m.ID, "agent_error", m.Error)
		default:
			select {
			case c.work <- m:
			case <-c.ctx.Done():
				return
			}
		}
	}
}

func (c *conn) workLoop() {
	upscale := c.s.upscale
	for {
		select {
		case <-c.ctx.Done():
			return
		case m := <-c.work:
			c.handle(m)
		case _, ok := <-upscale:
			if !ok {
				upscale = nil
				continue
			}
			c.requestUpscale()
		}
	}
}

// handle answers one UpscaleNotification or DownscaleRequest through the Policy. A
// call cut short by the end of the connection is not answered.
func (c *conn) handle(m inbound) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.CallTimeout)
	defer cancel()
	log := c.log.With("type", m.Type, "id", m.ID, "cpu", m.Alloc.CPU, "mem", m.Alloc.Mem)
	switch m.Type {
	case typeUpscaleNotification:
		err := c.s.withPolicy(ctx, func() error { return c.s.policy.Upscale(ctx, m.Alloc) })
		ms := time.Since(start).Milliseconds()
		switch {
		case c.ctx.Err() != nil:
			log.Warn("connection ended during the upscale; not answered", "err", err, "upscale_ms", ms)
		case err != nil:
			log.Error("upscale failed", "err", err, "upscale_ms", ms)
			c.send(msgInternalError(m.ID, "handle upscale: "+err.Error()))
		default:
			log.Info("upscaled", "upscale_ms", ms)
			c.send(msgUpscaleConfirmation(m.ID))
		}
	case typeDownscaleRequest:
		var ok bool
		var status string
		err := c.s.withPolicy(ctx, func() (err error) {
			ok, status, err = c.s.policy.Downscale(ctx, m.Alloc)
			return err
		})
		ms := time.Since(start).Milliseconds()
		switch {
		case c.ctx.Err() != nil:
			log.Warn("connection ended during the downscale; not answered", "err", err, "downscale_ms", ms)
		case err != nil:
			log.Error("downscale failed", "err", err, "downscale_ms", ms)
			c.send(msgInternalError(m.ID, "downscale: "+err.Error()))
		default:
			log.Info("downscale decided", "ok", ok, "status", status, "downscale_ms", ms)
			c.send(msgDownscaleResult(m.ID, ok, status))
		}
	}
}

// requestUpscale sends an UpscaleRequest unless one went out less than
// UpscaleRequestInterval ago on this connection.
func (c *conn) requestUpscale() {
	now := c.s.cfg.Now()
	if c.upscaleReqSent && now.Sub(c.lastUpscaleReq) < c.s.cfg.UpscaleRequestInterval {
		return
	}
	c.upscaleReqSent, c.lastUpscaleReq = true, now
	c.lastID += 2
	c.log.Info("memory pressure; requesting upscale", "id", c.lastID)
	c.send(msgUpscaleRequest(c.lastID))
}

// send writes one message; a failure ends the connection.
func (c *conn) send(o outbound) {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, o.encode()); err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn("send to the agent failed", "type", o.Type, "id", o.ID, "err", err)
		}
		c.end(websocket.StatusInternalError, "send failed")
	}
}

func writeJSON(ctx context.Context, ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageText, b)
}
