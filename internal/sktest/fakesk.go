// Package sktest holds test fakes for the safekeeper side of a compute: a fake safekeeper
// speaking the Postgres wire protocol (TIMELINE_STATUS) and a `postgres` shim script that
// answers `--sync-safekeepers`. It is imported only by tests and test binaries.
package sktest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/computetools/compute-tools/internal/pgwire"
)

// SafekeeperUser is the user name computes connect to safekeepers with.
const SafekeeperUser = "no_user"

type answerKind int

const (
	answerUnknown answerKind = iota // no row: the timeline is unknown
	answerStatus
	answerError
)

// FakeSafekeeper answers TIMELINE_STATUS on 127.0.0.1. It asks for a cleartext password
// and rejects a wrong one (SQLSTATE 28P01), rejects a user other than no_user and
// `options` that do not name its timeline and tenant, then answers TIMELINE_STATUS with
// what the test set: a status row, no row (unknown timeline, the default) or an error.
type FakeSafekeeper struct {
	// Addr is "127.0.0.1:<port>", the form of a spec's safekeeper_connstrings entry.
	Addr string

	tenant, timeline, password string

	srv *pgwire.Server

	mu          sync.Mutex
	kind        answerKind
	flush       string
	commit      string
	term        int
	errMsg      string
	delay       time.Duration
	queries     int
	authFails   int
	optionFails int
}

// NewFakeSafekeeper starts a fake safekeeper for one tenant/timeline that accepts
// password; it is closed when the test ends.
func NewFakeSafekeeper(t testing.TB, tenant, timeline, password string) *FakeSafekeeper {
	t.Helper()
	f, err := NewFakeSafekeeperServer(tenant, timeline, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// NewFakeSafekeeperServer starts a fake safekeeper for one tenant/timeline that accepts
// password, outside a test (a test binary or tool). Close it when done.
func NewFakeSafekeeperServer(tenant, timeline, password string) (*FakeSafekeeper, error) {
	f := &FakeSafekeeper{tenant: tenant, timeline: timeline, password: password, term: 1}
	srv, err := pgwire.Listen(func(c net.Conn) { _ = f.serve(c) })
	if err != nil {
		return nil, fmt.Errorf("fake safekeeper: listen: %w", err)
	}
	f.srv, f.Addr = srv, srv.Addr()
	return f, nil
}

// SetStatus makes TIMELINE_STATUS answer one row with these LSNs ("X/Y" strings; they are
// sent as given, so a test can also send garbage).
func (f *FakeSafekeeper) SetStatus(flushLSN, commitLSN string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.flush, f.commit = answerStatus, flushLSN, commitLSN
}

// SetUnknownTimeline makes TIMELINE_STATUS answer without a row.
func (f *FakeSafekeeper) SetUnknownTimeline() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind = answerUnknown
}

// SetError makes TIMELINE_STATUS fail with msg.
func (f *FakeSafekeeper) SetError(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.errMsg = answerError, msg
}

// SetDelay makes the fake wait d before answering a query (a slow safekeeper). The wait
// ends early when the fake is closed.
func (f *FakeSafekeeper) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Refuse closes the listening socket: new connections are refused from now on.
func (f *FakeSafekeeper) Refuse() { f.srv.Refuse() }

// Queries counts TIMELINE_STATUS queries received (answered or not yet).
func (f *FakeSafekeeper) Queries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries
}

// AuthFailures counts connections rejected for a wrong user or password.
func (f *FakeSafekeeper) AuthFailures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authFails
}

// OptionFailures counts connections rejected because `options` did not name the
// timeline and tenant.
func (f *FakeSafekeeper) OptionFailures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.optionFails
}

// Close stops the fake and waits for its connections to end.
func (f *FakeSafekeeper) Close() { f.srv.Close() }

func (f *FakeSafekeeper) serve(c net.Conn) error {
	be := pgproto3.NewBackend(c, c)
	startup, err := pgwire.ReadStartup(c, be)
	if err != nil || startup == nil {
		return err
	}
	pw, err := pgwire.AskPassword(be)
	if err != nil {
		return err
	}
	if startup.Parameters["user"] != SafekeeperUser || pw != f.password {
		f.count(&f.authFails)
		return f.fatal(be, "28P01", "password authentication failed")
	}
	opts := strings.Fields(startup.Parameters["options"])
	if !contains(opts, "timeline_id="+f.timeline) || !contains(opts, "tenant_id="+f.tenant) {
		f.count(&f.optionFails)
		return f.fatal(be, "08P01", "options must name timeline_id and tenant_id")
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}

	return pgwire.Serve(be, func(q string) error { return f.answer(be, q) })
}

func (f *FakeSafekeeper) answer(be *pgproto3.Backend, query string) error {
	if strings.TrimSpace(query) != "TIMELINE_STATUS" {
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "unsupported command " + query})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return be.Flush()
	}
	f.mu.Lock()
	f.queries++
	kind, flush, commit, term, errMsg, delay := f.kind, f.flush, f.commit, f.term, f.errMsg, f.delay
	f.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-f.srv.Done():
			return errors.New("closed")
		}
	}
	// Columns in an order unlike the one a reader might assume, to make it look
	// them up by name; term and the start LSN are there as in a real safekeeper.
	text := func(name string) pgproto3.FieldDescription {
		return pgproto3.FieldDescription{Name: []byte(name), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}
	}
	desc := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		text("term"), text("commit_lsn"), text("timeline_start_lsn"), text("flush_lsn"), text("peer_horizon_lsn"),
	}}
	switch kind {
	case answerError:
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "XX000", Message: errMsg})
	case answerUnknown:
		be.Send(desc)
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
	case answerStatus:
		be.Send(desc)
		be.Send(&pgproto3.DataRow{Values: [][]byte{
			[]byte(fmt.Sprint(term)), []byte(commit), []byte("0/1000000"), []byte(flush), []byte(commit),
		}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	}
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

func (f *FakeSafekeeper) fatal(be *pgproto3.Backend, code, msg string) error {
	return pgwire.Fatal(be, code, msg)
}

func (f *FakeSafekeeper) count(n *int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*n++
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
