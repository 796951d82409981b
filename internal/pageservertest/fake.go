// Package pageservertest fakes Neon's pageserver at the protocol level for tests: a
// Postgres wire-protocol server (pgx's pgproto3) that answers `basebackup …` with a COPY
// OUT of a gzip'd tar and `lease lsn …` with a valid_until row, and a gRPC server
// (grpc-go, grpcfake.go) of page_api.PageService that streams the same archive from
// GetBaseBackup and grants leases with LeaseLsn. Both record what clients send and inject
// faults on demand (refusal, failures, a drop mid-stream, an error after the data, a
// stall). It also builds the archive it serves from a real PostgreSQL 15 basebackup. It
// is imported only by tests and test binaries (grpc-go with it: no shipped binary
// carries it).
package pageservertest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/computetools/compute-tools/internal/pgwire"
)

// AppName is the application_name the fake requires at startup.
const AppName = "compute_ctl"

// Options set up a FakePageserver.
type Options struct {
	// Password is the password (storage token) clients must send; "" accepts any.
	Password string
	// Archive is the gzip'd tar served for basebackup (see BasebackupArchive).
	Archive []byte
	// ChunkSize is the size of the CopyData messages (default 64 KiB).
	ChunkSize int
	// ValidUntil answers `lease lsn`: the valid_until text, nil for NULL (not granted).
	// When the func is nil the answer is one hour from now in ms since the epoch.
	ValidUntil func(tenant, timeline, lsn string) *string
	// Faults are the initial faults (see SetFaults).
	Faults Faults
}

// Faults make the fake misbehave.
type Faults struct {
	// RefuseStartup answers every startup with a FATAL error.
	RefuseStartup bool
	// StartDelay delays the answer to every startup.
	StartDelay time.Duration
	// FailFirst answers the first FailFirst basebackup queries with an ErrorResponse.
	FailFirst int
	// DropAfterBytes, when > 0, closes the connection after sending that many bytes of
	// the archive, on every basebackup.
	DropAfterBytes int
	// ErrorAfterData sends an ErrorResponse after all the data, instead of
	// CommandComplete.
	ErrorAfterData bool
	// LeaseError answers `lease lsn` with an ErrorResponse carrying this message.
	LeaseError string
	// Stall makes every basebackup go silent after StallAfterBytes bytes of the archive
	// (0: right after CopyOutResponse), and `lease lsn` never answer: the connection
	// stays open, nothing more is sent, until the client hangs up or the fake closes.
	Stall           bool
	StallAfterBytes int
	// ChunkDelay pauses before every CopyData message of a basebackup: a slow transfer
	// that keeps moving.
	ChunkDelay time.Duration
}

// Session is what one client connection sent.
type Session struct {
	// Params are the startup parameters (user, database, application_name, options…).
	Params map[string]string
	// Password is the cleartext password the client sent ("" if it got no further).
	Password string
	// Queries are the simple queries in order.
	Queries []string
}

// FakePageserver is a running fake. Its methods are safe for concurrent use.
type FakePageserver struct {
	// Addr is host:port on 127.0.0.1.
	Addr string

	srv *pgwire.Server
	cfg Options

	mu          sync.Mutex
	faults      Faults
	archive     []byte
	basebackups int
	sessions    []*Session
}

// Start starts a fake for t and closes it in t.Cleanup.
func Start(t testing.TB, cfg Options) *FakePageserver {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("pageservertest: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

// New starts a fake listening on 127.0.0.1 on a free port. Close it when done.
func New(cfg Options) (*FakePageserver, error) {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 64 << 10
	}
	f := &FakePageserver{cfg: cfg, faults: cfg.Faults, archive: cfg.Archive}
	srv, err := pgwire.Listen(func(c net.Conn) { _ = f.handle(c) })
	if err != nil {
		return nil, fmt.Errorf("fake pageserver: listen: %w", err)
	}
	f.srv, f.Addr = srv, srv.Addr()
	return f, nil
}

// Connstr is a postgresql URL for the fake, with user no_user and no password, as the
// control plane hands out.
func (f *FakePageserver) Connstr() string {
	u := url.URL{Scheme: "postgresql", User: url.User("no_user"), Host: f.Addr}
	return u.String()
}

// Port is the TCP port.
func (f *FakePageserver) Port() int {
	_, p, _ := net.SplitHostPort(f.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// SetFaults replaces the faults; the FailFirst count restarts from zero.
func (f *FakePageserver) SetFaults(fl Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = fl
	f.basebackups = 0
}

// SetArchive replaces the served archive.
func (f *FakePageserver) SetArchive(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.archive = b
}

// Sessions returns a copy of what every connection sent so far.
func (f *FakePageserver) Sessions() []Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Session, 0, len(f.sessions))
	for _, s := range f.sessions {
		c := Session{Params: map[string]string{}, Password: s.Password, Queries: append([]string(nil), s.Queries...)}
		for k, v := range s.Params {
			c.Params[k] = v
		}
		out = append(out, c)
	}
	return out
}

// Queries returns every query received so far, in order.
func (f *FakePageserver) Queries() []string {
	var out []string
	for _, s := range f.Sessions() {
		out = append(out, s.Queries...)
	}
	return out
}

// Basebackups is how many basebackup queries were received since the start or the last
// SetFaults.
func (f *FakePageserver) Basebackups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.basebackups
}

// Close stops the fake and drops its connections.
func (f *FakePageserver) Close() { f.srv.Close() }

func (f *FakePageserver) currentFaults() Faults {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faults
}

func fatal(be *pgproto3.Backend, code, msg string) error { return pgwire.Fatal(be, code, msg) }

func queryError(be *pgproto3.Backend, msg string) error {
	be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX000", Message: msg})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

// handle speaks the protocol on one connection.
func (f *FakePageserver) handle(c net.Conn) error {
	be := pgproto3.NewBackend(c, c)
	startup, err := pgwire.ReadStartup(c, be)
	if err != nil || startup == nil {
		return err // nil for cancel requests and the like
	}
	sess := &Session{Params: map[string]string{}}
	for k, v := range startup.Parameters {
		sess.Params[k] = v
	}
	f.mu.Lock()
	f.sessions = append(f.sessions, sess)
	f.mu.Unlock()

	fl := f.currentFaults()
	if fl.StartDelay > 0 {
		t := time.NewTimer(fl.StartDelay)
		select {
		case <-t.C:
		case <-f.srv.Done():
			t.Stop()
			return nil
		}
	}
	if fl.RefuseStartup {
		return fatal(be, "57P03", "fake pageserver: refusing connections")
	}
	if app := startup.Parameters["application_name"]; app != AppName {
		return fatal(be, "28000", fmt.Sprintf("fake pageserver: application_name %q, want %q", app, AppName))
	}

	password, err := pgwire.AskPassword(be)
	if errors.Is(err, pgwire.ErrNotPassword) {
		return fatal(be, "08P01", "fake pageserver: "+err.Error())
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	sess.Password = password
	f.mu.Unlock()
	if f.cfg.Password != "" && password != f.cfg.Password {
		return fatal(be, "28P01", "fake pageserver: password authentication failed")
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0 (fake pageserver)"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}

	return pgwire.Serve(be, func(q string) error {
		f.mu.Lock()
		sess.Queries = append(sess.Queries, q)
		f.mu.Unlock()
		return f.query(c, be, sess, q)
	})
}

var errDropped = errors.New("connection dropped on purpose")

func (f *FakePageserver) query(c net.Conn, be *pgproto3.Backend, sess *Session, q string) error {
	fields := strings.Fields(q)
	switch {
	case len(fields) >= 1 && fields[0] == "basebackup":
		return f.basebackup(c, be, sess, fields)
	case len(fields) >= 2 && fields[0] == "lease" && fields[1] == "lsn":
		return f.lease(c, be, fields)
	}
	return queryError(be, fmt.Sprintf("fake pageserver: unknown command %q", q))
}

// checkBasebackup validates `basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]`
// against the session's compute mode.
func checkBasebackup(fields []string, options string) string {
	args := fields[1:]
	var pos []string
	gzip, replica := false, false
	for _, a := range args {
		switch {
		case a == "--gzip":
			gzip = true
		case a == "--replica":
			replica = true
		case strings.HasPrefix(a, "--"):
			return "unknown flag " + a
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) < 2 || len(pos) > 3 {
		return "want basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]"
	}
	if !gzip {
		return "this fake serves only --gzip"
	}
	mode := ""
	for _, o := range strings.Fields(options) {
		if v, ok := strings.CutPrefix(o, "neon.compute_mode="); ok {
			mode = v
		}
	}
	if !strings.Contains(options, "-c neon.compute_mode=") || mode == "" {
		return "startup options lack -c neon.compute_mode=<mode>"
	}
	if replica != (mode != "primary") {
		return fmt.Sprintf("compute mode %q with --replica=%v", mode, replica)
	}
	return ""
}

func (f *FakePageserver) basebackup(c net.Conn, be *pgproto3.Backend, sess *Session, fields []string) error {
	f.mu.Lock()
	f.basebackups++
	n := f.basebackups
	fl := f.faults
	archive := f.archive
	options := sess.Params["options"]
	f.mu.Unlock()

	if why := checkBasebackup(fields, options); why != "" {
		return queryError(be, "fake pageserver: "+why)
	}
	if n <= fl.FailFirst {
		return queryError(be, fmt.Sprintf("fake pageserver: injected failure of attempt %d", n))
	}
	if archive == nil {
		return queryError(be, "fake pageserver: no archive to serve")
	}
	be.Send(&pgproto3.CopyOutResponse{OverallFormat: 0})
	sent := 0
	if fl.Stall && fl.StallAfterBytes <= 0 {
		return f.stall(c, be)
	}
	for off := 0; off < len(archive); off += f.cfg.ChunkSize {
		end := min(off+f.cfg.ChunkSize, len(archive))
		chunk := archive[off:end]
		if fl.Stall && sent+len(chunk) >= fl.StallAfterBytes {
			be.Send(&pgproto3.CopyData{Data: chunk[:fl.StallAfterBytes-sent]})
			return f.stall(c, be)
		}
		if fl.DropAfterBytes > 0 && sent+len(chunk) >= fl.DropAfterBytes {
			chunk = chunk[:fl.DropAfterBytes-sent]
			be.Send(&pgproto3.CopyData{Data: chunk})
			_ = be.Flush()
			return errDropped
		}
		if fl.ChunkDelay > 0 {
			t := time.NewTimer(fl.ChunkDelay)
			select {
			case <-t.C:
			case <-f.srv.Done():
				t.Stop()
				return nil
			}
		}
		be.Send(&pgproto3.CopyData{Data: chunk})
		if err := be.Flush(); err != nil {
			return err
		}
		sent += len(chunk)
	}
	be.Send(&pgproto3.CopyDone{})
	if fl.ErrorAfterData {
		return queryError(be, "fake pageserver: injected error after the data")
	}
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY")})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

// stall flushes what was sent and then sends nothing more: it waits until the client
// hangs up (a read fails) or the fake closes.
func (f *FakePageserver) stall(c net.Conn, be *pgproto3.Backend) error {
	if err := be.Flush(); err != nil {
		return err
	}
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	select {
	case <-gone:
	case <-f.srv.Done():
	}
	return errStalled
}

var errStalled = errors.New("stalled on purpose")

func (f *FakePageserver) lease(c net.Conn, be *pgproto3.Backend, fields []string) error {
	if len(fields) != 5 {
		return queryError(be, "fake pageserver: want lease lsn <tenant> <timeline> <lsn>")
	}
	fl := f.currentFaults()
	if fl.Stall {
		return f.stall(c, be)
	}
	if fl.LeaseError != "" {
		return queryError(be, fl.LeaseError)
	}
	var v *string
	if f.cfg.ValidUntil != nil {
		v = f.cfg.ValidUntil(fields[2], fields[3], fields[4])
	} else {
		s := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
		v = &s
	}
	be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
		Name: []byte("valid_until"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1,
	}}})
	var val []byte
	if v != nil {
		val = []byte(*v)
	}
	be.Send(&pgproto3.DataRow{Values: [][]byte{val}})
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}
