package pageserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
)

// The gRPC client of the pageserver's page_api.PageService (pageapi/page_service.proto):
// GetBaseBackup and LeaseLsn, the two calls compute_ctl makes. It is written on net/http's
// unencrypted HTTP/2 and encodes the three small messages by hand, so that compute-init
// (which every start runs) carries neither grpc-go nor the protobuf runtime: their
// package initialisation and size are paid by the tests' fake pageserver only
// (docs/architecture.md, "Pageserver protocols"). The tests hold this client to grpc-go's
// server and the generated code.

// grpcService is the full name of the service, the first element of every method path.
const grpcService = "page_api.PageService"

// maxGRPCMessage bounds one received message (a base backup chunk is far smaller).
const maxGRPCMessage = 64 << 20

// gRPC status codes this client tells apart.
const (
	grpcOK                 = 0
	grpcFailedPrecondition = 9
)

// GRPCStatusError is a call that ended with a non-OK gRPC status.
type GRPCStatusError struct {
	Code    int
	Message string
}

func (e *GRPCStatusError) Error() string {
	return fmt.Sprintf("grpc status %d (%s): %s", e.Code, grpcCodeName(e.Code), e.Message)
}

func grpcCodeName(c int) string {
	names := []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
		"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
	if c >= 0 && c < len(names) {
		return names[c]
	}
	return "code " + strconv.Itoa(c)
}

// GRPCTarget says which pageserver shard a call goes to and as whom.
type GRPCTarget struct {
	// URL is grpc://host:port (spec.GRPCAddr).
	URL string
	// TenantID and TimelineID are hex ids; ShardID is "<number><count>" in hex.
	TenantID, TimelineID, ShardID string
	// Token is sent as "authorization: Bearer <token>" when set. Secret.
	Token string
}

// grpcCall is one call on a connection of its own, bounded by idle: the call fails with
// a StallError when the pageserver sends nothing (connect, response headers, messages,
// trailers) for that long.
type grpcCall struct {
	t    GRPCTarget
	idle time.Duration

	dialed atomic.Int64 // when the connection was made, Unix ns (pageserver_connect_micros)
}

// open sends the request message to method and returns the response stream. The caller
// must call the returned stop (it cancels the call and closes the connection).
func (c *grpcCall) open(ctx context.Context, method string, msg []byte) (*grpcStream, error) {
	addr, err := spec.GRPCAddr(c.t.URL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{idle: c.idle, cancel: cancel}
	w.arm()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			conn, err := (&net.Dialer{Timeout: c.idle, KeepAlive: 30 * time.Second}).DialContext(ctx, network, a)
			if err == nil {
				c.dialed.Store(time.Now().UnixNano())
			}
			return conn, err
		},
		Protocols:          new(http.Protocols),
		DisableCompression: true,
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	stop := func() {
		w.disarm()
		cancel(nil)
		tr.CloseIdleConnections()
	}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/"+grpcService+"/"+method, bytes.NewReader(body))
	if err != nil {
		stop()
		return nil, err
	}
	h := req.Header
	h.Set("Content-Type", "application/grpc")
	h.Set("TE", "trailers")
	h.Set("User-Agent", "compute-tools")
	h.Set("neon-tenant-id", c.t.TenantID)
	h.Set("neon-timeline-id", c.t.TimelineID)
	h.Set("neon-shard-id", c.t.ShardID)
	if c.t.Token != "" {
		h.Set("Authorization", "Bearer "+c.t.Token)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		stop()
		return nil, w.explain(fmt.Errorf("pageserver %s: %w", addr, err))
	}
	w.disarm()
	s := &grpcStream{resp: resp, body: &armedReader{r: resp.Body, w: w}, w: w, stop: func() { resp.Body.Close(); stop() }}
	if resp.StatusCode != http.StatusOK {
		s.stop()
		return nil, fmt.Errorf("pageserver %s answered HTTP %d, not gRPC", addr, resp.StatusCode)
	}
	// A call refused at once is a response of headers only, the status among them; with
	// status OK (0) it ended without a message, which no caller can use.
	if code := resp.Header.Get("Grpc-Status"); code != "" {
		defer s.stop()
		if err := statusError(code, resp.Header.Get("Grpc-Message")); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("pageserver %s: the call ended without a message", addr)
	}
	return s, nil
}

// grpcStream reads the response messages of a call.
type grpcStream struct {
	resp *http.Response
	body io.Reader // resp.Body under the watchdog
	w    *watchdog
	stop func()
	hdr  [5]byte
	buf  []byte
}

// next returns the next message, or io.EOF after the last one when the call ended with
// status OK. The returned slice is valid until the next call.
func (s *grpcStream) next() ([]byte, error) {
	if _, err := io.ReadFull(s.body, s.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, s.w.explain(s.trailerStatus())
		}
		return nil, s.w.explain(fmt.Errorf("grpc stream: %w", err))
	}
	if s.hdr[0] != 0 {
		return nil, errors.New("grpc stream: a compressed message, though none was asked for")
	}
	n := binary.BigEndian.Uint32(s.hdr[1:])
	if n > maxGRPCMessage {
		return nil, fmt.Errorf("grpc stream: a message of %d bytes (at most %d)", n, maxGRPCMessage)
	}
	if cap(s.buf) < int(n) {
		s.buf = make([]byte, n)
	}
	s.buf = s.buf[:n]
	if _, err := io.ReadFull(s.body, s.buf); err != nil {
		return nil, s.w.explain(fmt.Errorf("grpc stream: message cut short: %w", err))
	}
	return s.buf, nil
}

// trailerStatus is the call's end: io.EOF for status OK, else its error. A stream that
// ends without a status was cut (a pageserver that went away mid-stream).
func (s *grpcStream) trailerStatus() error {
	code := s.resp.Trailer.Get("Grpc-Status")
	if code == "" {
		return errors.New("grpc stream ended without a status (connection dropped?)")
	}
	if err := statusError(code, s.resp.Trailer.Get("Grpc-Message")); err != nil {
		return err
	}
	return io.EOF
}

func statusError(code, msg string) error {
	n, err := strconv.Atoi(code)
	if err != nil {
		return fmt.Errorf("grpc: bad grpc-status %q", code)
	}
	if n == grpcOK {
		return nil
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &GRPCStatusError{Code: n, Message: msg}
}

// armedReader keeps the watchdog running while a read waits for the pageserver, and
// only then: the time the caller spends with the data (unpacking) does not count.
type armedReader struct {
	r io.Reader
	w *watchdog
}

func (a *armedReader) Read(p []byte) (int, error) {
	a.w.arm()
	n, err := a.r.Read(p)
	a.w.disarm()
	return n, err
}

// watchdog cancels a call that has been silent for idle, with a StallError as the cause.
type watchdog struct {
	idle   time.Duration
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	t       *time.Timer
	stalled bool
}

// arm (re)starts the countdown: called whenever the pageserver sent something.
func (w *watchdog) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t == nil {
		w.t = time.AfterFunc(w.idle, w.fire)
		return
	}
	w.t.Reset(w.idle)
}

func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Stop()
	}
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.stalled = true
	w.mu.Unlock()
	w.cancel(&StallError{Idle: w.idle})
}

// explain replaces err by the StallError when the watchdog ended the call.
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stalled && err != nil {
		return &StallError{Idle: w.idle}
	}
	return err
}

// Hand encoding of the messages (proto3 wire format: a varint key of field number << 3
// | wire type, then the value; zero values are left out).

func appendVarintField(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(field)<<3) // wire type 0: varint
	return binary.AppendUvarint(b, v)
}

// compressionGzip is BASE_BACKUP_COMPRESSION_GZIP.
const compressionGzip = 2

// encodeGetBaseBackupRequest encodes GetBaseBackupRequest{lsn, replica, full=false,
// compression=GZIP}.
func encodeGetBaseBackupRequest(lsn uint64, replica bool) []byte {
	var b []byte
	b = appendVarintField(b, 1, lsn)
	if replica {
		b = appendVarintField(b, 2, 1)
	}
	return appendVarintField(b, 4, compressionGzip)
}

// encodeLeaseLsnRequest encodes LeaseLsnRequest{lsn}.
func encodeLeaseLsnRequest(lsn uint64) []byte { return appendVarintField(nil, 1, lsn) }

// eachField calls fn for every field of the message b: for wire type 0 with the varint,
// for wire type 2 with the bytes; fixed-size fields are skipped.
func eachField(b []byte, fn func(field int, varint uint64, data []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("protobuf: bad field key")
		}
		b = b[n:]
		field, typ := int(key>>3), key&7
		switch typ {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return errors.New("protobuf: bad varint")
			}
			b = b[n:]
			if err := fn(field, v, nil); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errors.New("protobuf: short fixed64")
			}
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errors.New("protobuf: bad length")
			}
			data := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := fn(field, 0, data); err != nil {
				return err
			}
		case 5:
			if len(b) < 4 {
				return errors.New("protobuf: short fixed32")
			}
			b = b[4:]
		default:
			return fmt.Errorf("protobuf: wire type %d", typ)
		}
	}
	return nil
}

// decodeChunk returns the chunk field of a GetBaseBackupResponseChunk.
func decodeChunk(msg []byte) ([]byte, error) {
	var chunk []byte
	err := eachField(msg, func(field int, _ uint64, data []byte) error {
		if field == 1 {
			chunk = data
		}
		return nil
	})
	return chunk, err
}

// decodeLeaseLsnResponse returns the expires field of a LeaseLsnResponse.
func decodeLeaseLsnResponse(msg []byte) (time.Time, error) {
	var ts []byte
	found := false
	if err := eachField(msg, func(field int, _ uint64, data []byte) error {
		if field == 1 {
			ts, found = data, true
		}
		return nil
	}); err != nil {
		return time.Time{}, err
	}
	if !found {
		return time.Time{}, errors.New("lease answer has no expiry")
	}
	var secs, nanos int64
	if err := eachField(ts, func(field int, v uint64, _ []byte) error {
		switch field {
		case 1:
			secs = int64(v)
		case 2:
			nanos = int64(int32(v))
		}
		return nil
	}); err != nil {
		return time.Time{}, err
	}
	if nanos < 0 || nanos >= 1e9 {
		return time.Time{}, fmt.Errorf("lease answer: bad expiry nanos %d", nanos)
	}
	return time.Unix(secs, nanos), nil
}

// grpcBasebackupOnce makes one gRPC attempt: GetBaseBackup, the chunks into the
// unpacker, the final status checked (an error after the data fails the attempt).
func grpcBasebackupOnce(ctx context.Context, t GRPCTarget, idle time.Duration, lsn uint64, replica bool, pgdata string) (Stats, error) {
	start := time.Now()
	call := &grpcCall{t: t, idle: idle}
	s, err := call.open(ctx, "GetBaseBackup", encodeGetBaseBackupRequest(lsn, replica))
	if err != nil {
		return Stats{}, err
	}
	defer s.stop()
	var connected time.Duration
	if d := call.dialed.Load(); d != 0 {
		connected = time.Unix(0, d).Sub(start)
	}
	n, err := unpackStream(pgdata, func(w io.Writer) error {
		for {
			msg, err := s.next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			chunk, err := decodeChunk(msg)
			if err != nil {
				return fmt.Errorf("basebackup chunk: %w", err)
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return Stats{}, err
	}
	return Stats{ConnectMicros: connected.Microseconds(), Bytes: n, Duration: time.Since(start)}, nil
}

// LeaseLSNGRPC is LeaseLSN over gRPC (LeaseLsn on one shard): the lease's expiry, or
// ErrLeaseNotGranted when the pageserver refuses it (FAILED_PRECONDITION: the LSN is
// behind the GC cutoff). The call fails once the pageserver is silent for idle
// (DefaultIdleTimeout when <= 0).
func LeaseLSNGRPC(ctx context.Context, idle time.Duration, t GRPCTarget, lsn string) (time.Time, error) {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if err := checkHexID("tenant", t.TenantID); err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	if err := checkHexID("timeline", t.TimelineID); err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	l, err := spec.ParseLsn(lsn)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	call := &grpcCall{t: t, idle: idle}
	s, err := call.open(ctx, "LeaseLsn", encodeLeaseLsnRequest(uint64(l)))
	if err != nil {
		return time.Time{}, leaseGRPCError(err)
	}
	defer s.stop()
	msg, err := s.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("no answer message")
		}
		return time.Time{}, leaseGRPCError(err)
	}
	expiry, err := decodeLeaseLsnResponse(msg)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease lsn: %w", err)
	}
	// The status that ends the call must be OK too.
	if _, err := s.next(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one answer message")
		}
		return time.Time{}, leaseGRPCError(err)
	}
	return expiry, nil
}

func leaseGRPCError(err error) error {
	var st *GRPCStatusError
	if errors.As(err, &st) && st.Code == grpcFailedPrecondition {
		return fmt.Errorf("%w: %s", ErrLeaseNotGranted, st.Message)
	}
	return fmt.Errorf("lease lsn: %w", err)
}
