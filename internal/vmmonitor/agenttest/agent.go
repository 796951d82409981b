// Package agenttest is a test autoscaler agent: it speaks protocol v1.0 to a vm-monitor
// the way neondatabase/autoscaling's agent does (pkg/agent/dispatcher.go, pkg/api), in
// its own words. Its messages are built from its own copies of the agent's JSON shapes
// (the agent's json tags, the agent's framing), never from internal/vmmonitor's types,
// so that a test through it checks our wire format against the agent's rather than
// against itself.
//
// What it does as the agent does:
//   - Dial: the WebSocket (github.com/coder/websocket, the agent's library), then the
//     version range {"min":1,"max":1}, then the {"version"} or {"error"} answer, all
//     within ConnectTimeout (4 s); a failed handshake closes with 1002.
//   - Requests are {"type","id","content"} with even ids (2, 4, ...), each waiting
//     ResponseTimeout (5 s) for the reply with the same id.
//   - Replies are read the agent's way: the frame into a map for "type" and "id" (a
//     float64), then the whole frame into the typed struct.
//   - An UpscaleRequest is recorded (UpscaleRequests); a reply nobody waits for is
//     answered with InvalidMessage "... id is unknown or already timed out ..."; a
//     message of unknown type with InvalidMessage; an InvalidMessage is logged and
//     fails the call waiting on its id; a frame it cannot decode ends the connection
//     (1007 from wsjson.Read for one that is not JSON, else 1011).
//   - HealthChecks runs the agent's periodic health check (every 5 s, each with the
//     response timeout; failing for MaxHealthCheckFailure, 30 s, drops the connection).
//
// What it adds for tests: typed call errors, SendRaw for frames the agent never sends,
// and a record of the InvalidMessages received.
package agenttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// The agent's shapes (pkg/api/types.go, pkg/api/versionutils.go), with its json tags.
type (
	allocation struct {
		Cpu float64 `json:"cpu"`
		Mem uint64  `json:"mem"`
	}
	upscaleNotification struct {
		Granted allocation `json:"granted"`
	}
	downscaleRequest struct {
		Target allocation `json:"target"`
	}
	invalidMessage struct {
		Error string `json:"error"`
	}
	internalError struct {
		Error string `json:"error"`
	}
	healthCheck         struct{}
	upscaleRequest      struct{}
	upscaleConfirmation struct{}
	// downscaleResult has no tags: the agent's fields are Ok and Status.
	downscaleResult struct {
		Ok     bool
		Status string
	}
	versionRange struct {
		Min uint32 `json:"min"`
		Max uint32 `json:"max"`
	}
	protocolResponse struct {
		Version uint32  `json:"version,omitempty"`
		Error   *string `json:"error,omitempty"`
	}
	// bundle is api.SerializeMonitorMessage's wire struct.
	bundle struct {
		Content any    `json:"content"`
		Type    string `json:"type"`
		Id      uint64 `json:"id"`
	}
)

// Options configures Dial. Zero values take the agent's defaults.
type Options struct {
	// MinVersion and MaxVersion are the range offered (1 and 1).
	MinVersion, MaxVersion uint32
	// ConnectTimeout bounds the dial and the handshake (4 s).
	ConnectTimeout time.Duration
	// ResponseTimeout bounds each call (5 s).
	ResponseTimeout time.Duration
	// MaxHealthCheckFailure is how long health checks may fail in a row before
	// HealthChecks drops the connection (30 s).
	MaxHealthCheckFailure time.Duration
	// HTTPClient dials the WebSocket (http.DefaultClient); a vsock test gives one whose
	// transport dials vsock.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// HandshakeError is the monitor's {"error": ...} answer to the version range.
type HandshakeError struct{ Text string }

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("monitor returned error during protocol handshake: %q", e.Text)
}

// InternalError is the monitor's InternalError answer to a call.
type InternalError struct{ Text string }

func (e *InternalError) Error() string { return "vm-monitor internal error: " + e.Text }

// InvalidMessageError is the monitor's InvalidMessage answer to a call.
type InvalidMessageError struct{ Text string }

func (e *InvalidMessageError) Error() string { return "vm-monitor says invalid message: " + e.Text }

// ErrTimeout is a call that got no answer within the response timeout.
var ErrTimeout = errors.New("timed out waiting for monitor response")

// Received is one message from the monitor, as the agent reads it.
type Received struct {
	Type string
	ID   uint64
	// Raw is the whole frame.
	Raw json.RawMessage
}

// Agent is one connection to a vm-monitor.
type Agent struct {
	conn    *websocket.Conn
	log     *slog.Logger
	opts    Options
	Version uint32

	lastID atomic.Uint64

	mu      sync.Mutex
	waiters map[uint64]chan result
	exitErr error

	upscaleReqs chan uint64
	invalid     chan Received
	done        chan struct{}
	cancel      context.CancelFunc
	ctx         context.Context
}

type result struct {
	msg Received
	err error
}

// Dial connects to url (ws://host:port/monitor) and does the version handshake.
func Dial(ctx context.Context, url string, opts Options) (*Agent, error) {
	if opts.MinVersion == 0 && opts.MaxVersion == 0 {
		opts.MinVersion, opts.MaxVersion = 1, 1
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 4 * time.Second
	}
	if opts.ResponseTimeout <= 0 {
		opts.ResponseTimeout = 5 * time.Second
	}
	if opts.MaxHealthCheckFailure <= 0 {
		opts.MaxHealthCheckFailure = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	c, _, err := websocket.Dial(cctx, url, &websocket.DialOptions{HTTPClient: opts.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("error establishing websocket connection to %s: %w", url, err)
	}
	var resp protocolResponse
	err = wsjson.Write(cctx, c, versionRange{Min: opts.MinVersion, Max: opts.MaxVersion})
	if err == nil {
		err = wsjson.Read(cctx, c, &resp)
		if err == nil && resp.Error != nil {
			err = &HandshakeError{Text: *resp.Error}
		}
	}
	if err != nil {
		c.Close(websocket.StatusProtocolError, "handshake failed")
		return nil, err
	}
	a := &Agent{
		conn:        c,
		log:         opts.Logger,
		opts:        opts,
		Version:     resp.Version,
		waiters:     map[uint64]chan result{},
		upscaleReqs: make(chan uint64, 64),
		invalid:     make(chan Received, 64),
		done:        make(chan struct{}),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	go a.run()
	return a, nil
}

// Done is closed when the connection has ended; Err then tells why.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Err is why the connection ended (a websocket.CloseError when the monitor closed it).
func (a *Agent) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exitErr
}

// UpscaleRequests yields the id of each UpscaleRequest received, in order.
func (a *Agent) UpscaleRequests() <-chan uint64 { return a.upscaleReqs }

// InvalidMessages yields every InvalidMessage received, in order.
func (a *Agent) InvalidMessages() <-chan Received { return a.invalid }

// Close closes the connection normally (1000) and waits for the reader to end.
func (a *Agent) Close() error {
	err := a.conn.Close(websocket.StatusNormalClosure, "normal exit")
	<-a.done
	return err
}

// Vanish drops the connection without a close frame, as a killed agent would.
func (a *Agent) Vanish() {
	a.conn.CloseNow()
	<-a.done
}

// HealthCheck makes one health-check call.
func (a *Agent) HealthCheck(ctx context.Context) error {
	_, err := a.call(ctx, "HealthCheck", healthCheck{})
	return err
}

// NotifyUpscale sends UpscaleNotification{granted} and waits for the confirmation.
func (a *Agent) NotifyUpscale(ctx context.Context, cpu float64, mem uint64) error {
	_, err := a.call(ctx, "UpscaleNotification", upscaleNotification{Granted: allocation{Cpu: cpu, Mem: mem}})
	return err
}

// RequestDownscale sends DownscaleRequest{target} and returns the DownscaleResult.
func (a *Agent) RequestDownscale(ctx context.Context, cpu float64, mem uint64) (ok bool, status string, err error) {
	m, err := a.call(ctx, "DownscaleRequest", downscaleRequest{Target: allocation{Cpu: cpu, Mem: mem}})
	if err != nil {
		return false, "", err
	}
	var res downscaleResult
	if err := json.Unmarshal(m.Raw, &res); err != nil {
		return false, "", fmt.Errorf("error unmarshaling DownscaleResult: %w", err)
	}
	return res.Ok, res.Status, nil
}

// Call sends content as a message of type typ (any name, known to the monitor or not)
// and waits for the reply with its id.
func (a *Agent) Call(ctx context.Context, typ string, content any) (Received, error) {
	return a.call(ctx, typ, content)
}

// Send sends content as a message of type typ with the next id and waits for nothing;
// it returns the id.
func (a *Agent) Send(ctx context.Context, typ string, content any) (uint64, error) {
	id := a.lastID.Add(2)
	return id, a.send(ctx, typ, id, content)
}

// SendRaw writes one frame as it is.
func (a *Agent) SendRaw(ctx context.Context, typ websocket.MessageType, data []byte) error {
	return a.conn.Write(ctx, typ, data)
}

// HealthChecks runs the agent's health checks until ctx or the connection ends: every
// interval (the agent's 5 s) a call with the response timeout, each outcome sent on the
// returned channel (dropped when nobody reads). Failures for longer than
// MaxHealthCheckFailure close the connection with 1011, as the agent does.
func (a *Agent) HealthChecks(ctx context.Context, interval time.Duration) <-chan error {
	out := make(chan error, 16)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		var firstFailure time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.done:
				return
			case <-t.C:
			}
			err := a.HealthCheck(ctx)
			if err != nil {
				a.log.Error("vm-monitor health check failed", "err", err)
				if firstFailure.IsZero() {
					firstFailure = time.Now()
				} else if time.Since(firstFailure) > a.opts.MaxHealthCheckFailure {
					a.conn.Close(websocket.StatusInternalError, "vm-monitor has been failing health checks")
				}
			} else {
				firstFailure = time.Time{}
			}
			select {
			case out <- err:
			default:
			}
		}
	}()
	return out
}

func (a *Agent) call(ctx context.Context, typ string, content any) (Received, error) {
	id := a.lastID.Add(2)
	ch := make(chan result, 1)
	a.mu.Lock()
	a.waiters[id] = ch
	a.mu.Unlock()
	forget := func() {
		a.mu.Lock()
		delete(a.waiters, id)
		a.mu.Unlock()
	}
	if err := a.send(ctx, typ, id, content); err != nil {
		forget()
		return Received{}, err
	}
	t := time.NewTimer(a.opts.ResponseTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.msg, r.err
	case <-t.C:
		forget()
		return Received{}, fmt.Errorf("%s id %d: %w", typ, id, ErrTimeout)
	case <-ctx.Done():
		forget()
		return Received{}, ctx.Err()
	case <-a.done:
		forget()
		return Received{}, fmt.Errorf("connection ended: %w", a.Err())
	}
}

// send frames content the agent's way, as api.SerializeMonitorMessage does.
func (a *Agent) send(ctx context.Context, typ string, id uint64, content any) error {
	data, err := json.Marshal(bundle{Content: content, Type: typ, Id: id})
	if err != nil {
		return fmt.Errorf("error serializing message: %w", err)
	}
	raw := json.RawMessage(data)
	return wsjson.Write(ctx, a.conn, &raw)
}

// resolve hands r to the waiter for id, or reports that there is none.
func (a *Agent) resolve(id uint64, r result) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch, ok := a.waiters[id]
	if ok {
		ch <- r
		delete(a.waiters, id)
	}
	return ok
}

func (a *Agent) run() {
	defer close(a.done)
	defer a.cancel()
	for {
		err := a.handleMessage()
		if err != nil {
			a.mu.Lock()
			a.exitErr = err
			a.mu.Unlock()
			if websocket.CloseStatus(err) == -1 {
				a.conn.Close(websocket.StatusInternalError, "error handling message")
			}
			a.conn.CloseNow()
			return
		}
	}
}

// handleMessage reads and handles one message, as the agent's HandleMessage.
func (a *Agent) handleMessage() error {
	var message json.RawMessage
	if err := wsjson.Read(a.ctx, a.conn, &message); err != nil {
		return fmt.Errorf("error receiving message: %w", err)
	}
	var unstructured map[string]any
	if err := json.Unmarshal(message, &unstructured); err != nil {
		return fmt.Errorf("error deserializing message: %q", string(message))
	}
	typ, ok := unstructured["type"].(string)
	if !ok {
		return fmt.Errorf("error extracting 'type' field: %q", string(message))
	}
	f, ok := unstructured["id"].(float64)
	if !ok {
		return fmt.Errorf("error extracting 'id' field: %q", string(message))
	}
	id := uint64(f)
	m := Received{Type: typ, ID: id, Raw: message}

	unmarshal := func(v any) error {
		if err := json.Unmarshal(message, v); err != nil {
			err = fmt.Errorf("error unmarshaling %s: %w", typ, err)
			_ = a.send(a.ctx, "InvalidMessage", id, invalidMessage{Error: err.Error()})
			a.resolve(id, result{err: errors.New("failed unmarshaling JSON")})
			return err
		}
		return nil
	}
	unknownID := func() error {
		text := fmt.Sprintf("Received %s with id %d but id is unknown or already timed out waiting for a reply", typ, id)
		a.log.Warn(text)
		return a.send(a.ctx, "InvalidMessage", id, invalidMessage{Error: text})
	}

	switch typ {
	case "UpscaleRequest":
		var v upscaleRequest
		if err := unmarshal(&v); err != nil {
			return err
		}
		select {
		case a.upscaleReqs <- id:
		default:
			a.log.Warn("upscale request record full; dropped", "id", id)
		}
		return nil
	case "UpscaleConfirmation":
		var v upscaleConfirmation
		if err := unmarshal(&v); err != nil {
			return err
		}
	case "DownscaleResult":
		var v downscaleResult
		if err := unmarshal(&v); err != nil {
			return err
		}
	case "HealthCheck":
		var v healthCheck
		if err := unmarshal(&v); err != nil {
			return err
		}
	case "InternalError":
		var v internalError
		if err := unmarshal(&v); err != nil {
			return err
		}
		if !a.resolve(id, result{err: &InternalError{Text: v.Error}}) {
			return unknownID()
		}
		return nil
	case "InvalidMessage":
		var v invalidMessage
		if err := unmarshal(&v); err != nil {
			return err
		}
		a.log.Warn("Received notification we sent an invalid message", "error", v.Error)
		select {
		case a.invalid <- m:
		default:
		}
		// The agent's HandleMessage fails the call waiting on this id ("unknown").
		a.resolve(id, result{err: &InvalidMessageError{Text: v.Error}})
		return nil
	default:
		a.resolve(id, result{err: errors.New("received unknown message type")})
		return a.send(a.ctx, "InvalidMessage", id, invalidMessage{Error: fmt.Sprintf("Received message of unknown type: %q", typ)})
	}
	if !a.resolve(id, result{msg: m}) {
		return unknownID()
	}
	return nil
}
