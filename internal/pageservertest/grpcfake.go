package pageservertest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/computetools/compute-tools/internal/pageserver/pageapi"
)

// GRPCOptions set up a FakeGRPC.
type GRPCOptions struct {
	// Token is the bearer token clients must send ("authorization: Bearer <token>");
	// "" accepts any (and none).
	Token string
	// Archive is the gzip'd tar served by GetBaseBackup.
	Archive []byte
	// ChunkSize is the size of the chunks (default 64 KiB).
	ChunkSize int
	// LeaseExpiry answers LeaseLsn: the expiry, or ok=false to refuse the lease with
	// FAILED_PRECONDITION (the LSN is behind the GC cutoff). nil: one hour from now.
	LeaseExpiry func(c GRPCCall) (expiry time.Time, ok bool)
	// Faults are the initial faults (see SetFaults).
	Faults GRPCFaults
}

// GRPCFaults make the gRPC fake misbehave.
type GRPCFaults struct {
	// FailFirst answers the first FailFirst GetBaseBackup calls with UNAVAILABLE.
	FailFirst int
	// DropAfterBytes, when > 0, cuts every connection (no status, no trailers) after
	// that many bytes of the archive were sent, on every GetBaseBackup.
	DropAfterBytes int
	// ErrorAfterData ends GetBaseBackup with INTERNAL after all the data.
	ErrorAfterData bool
	// Stall makes GetBaseBackup go silent after StallAfterBytes bytes of the archive
	// (0: before the first chunk) and LeaseLsn never answer, until the client gives up or
	// the fake closes.
	Stall           bool
	StallAfterBytes int
	// LeaseError answers LeaseLsn with UNAVAILABLE and this message.
	LeaseError string
}

// GRPCCall is what one call carried.
type GRPCCall struct {
	// Method is "GetBaseBackup" or "LeaseLsn".
	Method string
	// TenantID, TimelineID and ShardID are the neon-* metadata; Auth the authorization
	// metadata.
	TenantID, TimelineID, ShardID, Auth string
	// LSN is the request's lsn; Replica, Full and Compression GetBaseBackup's fields.
	LSN         uint64
	Replica     bool
	Full        bool
	Compression pageapi.BaseBackupCompression
}

// FakeGRPC is a pageserver's gRPC page service (page_api.PageService) served by grpc-go:
// GetBaseBackup streams the archive in chunks, LeaseLsn grants leases; every call must
// carry the neon-* metadata (and the token, when set). Its methods are safe for
// concurrent use.
type FakeGRPC struct {
	pageapi.UnimplementedPageServiceServer

	// Addr is host:port on 127.0.0.1.
	Addr string

	srv   *grpc.Server
	lis   *trackingListener
	cfg   GRPCOptions
	close chan struct{}
	once  sync.Once

	mu          sync.Mutex
	faults      GRPCFaults
	archive     []byte
	basebackups int
	calls       []GRPCCall
}

// StartGRPC starts a gRPC fake for t and closes it in t.Cleanup.
func StartGRPC(t testing.TB, cfg GRPCOptions) *FakeGRPC {
	t.Helper()
	f, err := NewGRPC(cfg)
	if err != nil {
		t.Fatalf("pageservertest: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

// NewGRPC starts a gRPC fake on a free port of 127.0.0.1. Close it when done.
func NewGRPC(cfg GRPCOptions) (*FakeGRPC, error) {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 64 << 10
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake grpc pageserver: listen: %w", err)
	}
	f := &FakeGRPC{Addr: l.Addr().String(), lis: &trackingListener{Listener: l, conns: map[net.Conn]bool{}},
		cfg: cfg, close: make(chan struct{}), faults: cfg.Faults, archive: cfg.Archive}
	f.srv = grpc.NewServer()
	pageapi.RegisterPageServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(f.lis) }()
	return f, nil
}

// URL is the fake's grpc:// URL, as pageserver_connection_info gives it: with the user
// no_user, as Neon's storage controller writes it (grpc://no_user@host:port).
func (f *FakeGRPC) URL() string {
	return (&url.URL{Scheme: "grpc", User: url.User("no_user"), Host: f.Addr}).String()
}

// SetFaults replaces the faults; the FailFirst count restarts from zero.
func (f *FakeGRPC) SetFaults(fl GRPCFaults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = fl
	f.basebackups = 0
}

// SetArchive replaces the served archive.
func (f *FakeGRPC) SetArchive(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.archive = b
}

// Calls returns the calls so far, in order.
func (f *FakeGRPC) Calls() []GRPCCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]GRPCCall(nil), f.calls...)
}

// Basebackups counts the GetBaseBackup calls since the start or the last SetFaults.
func (f *FakeGRPC) Basebackups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.basebackups
}

// Close stops the fake and cuts every connection; a stalled call ends.
func (f *FakeGRPC) Close() {
	f.once.Do(func() {
		close(f.close)
		f.srv.Stop()
	})
}

// record checks the call's metadata and records it.
func (f *FakeGRPC) record(ctx context.Context, c GRPCCall) (GRPCCall, GRPCFaults, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c.TenantID, c.TimelineID, c.ShardID, c.Auth = get("neon-tenant-id"), get("neon-timeline-id"), get("neon-shard-id"), get("authorization")
	f.mu.Lock()
	f.calls = append(f.calls, c)
	fl := f.faults
	f.mu.Unlock()
	if c.TenantID == "" || c.TimelineID == "" || c.ShardID == "" {
		return c, fl, status.Error(codes.InvalidArgument, "missing neon-tenant-id, neon-timeline-id or neon-shard-id")
	}
	if f.cfg.Token != "" && c.Auth != "Bearer "+f.cfg.Token {
		return c, fl, status.Error(codes.Unauthenticated, "invalid token")
	}
	return c, fl, nil
}

// GetBaseBackup streams the archive.
func (f *FakeGRPC) GetBaseBackup(req *pageapi.GetBaseBackupRequest, stream pageapi.PageService_GetBaseBackupServer) error {
	_, fl, err := f.record(stream.Context(), GRPCCall{Method: "GetBaseBackup", LSN: req.GetLsn(), Replica: req.GetReplica(),
		Full: req.GetFull(), Compression: req.GetCompression()})
	if err != nil {
		return err
	}
	if req.GetCompression() != pageapi.BaseBackupCompression_BASE_BACKUP_COMPRESSION_GZIP {
		return status.Errorf(codes.InvalidArgument, "fake serves gzip only, not %s", req.GetCompression())
	}
	f.mu.Lock()
	f.basebackups++
	n, archive := f.basebackups, f.archive
	f.mu.Unlock()
	if n <= fl.FailFirst {
		return status.Errorf(codes.Unavailable, "fake pageserver: failing basebackup %d of %d as asked", n, fl.FailFirst)
	}
	sent := 0
	for len(archive) > 0 || sent == 0 {
		if fl.Stall && sent >= fl.StallAfterBytes {
			return f.stall(stream.Context())
		}
		if fl.DropAfterBytes > 0 && sent >= fl.DropAfterBytes {
			f.lis.cutAll()
			return status.Error(codes.Aborted, "dropped")
		}
		size := min(f.cfg.ChunkSize, len(archive))
		if fl.Stall && fl.StallAfterBytes > sent {
			size = min(size, fl.StallAfterBytes-sent)
		}
		if fl.DropAfterBytes > sent {
			size = min(size, fl.DropAfterBytes-sent)
		}
		if size == 0 {
			break
		}
		if err := stream.Send(&pageapi.GetBaseBackupResponseChunk{Chunk: archive[:size]}); err != nil {
			return err
		}
		archive, sent = archive[size:], sent+size
	}
	if fl.ErrorAfterData {
		return status.Error(codes.Internal, "fake pageserver: error after the data, as asked")
	}
	return nil
}

// LeaseLsn grants (or refuses) a lease.
func (f *FakeGRPC) LeaseLsn(ctx context.Context, req *pageapi.LeaseLsnRequest) (*pageapi.LeaseLsnResponse, error) {
	c, fl, err := f.record(ctx, GRPCCall{Method: "LeaseLsn", LSN: req.GetLsn()})
	if err != nil {
		return nil, err
	}
	switch {
	case fl.Stall:
		return nil, f.stall(ctx)
	case fl.LeaseError != "":
		return nil, status.Error(codes.Unavailable, fl.LeaseError)
	case req.GetLsn() == 0:
		return nil, status.Error(codes.InvalidArgument, "lsn must not be 0")
	}
	expiry, ok := time.Now().Add(time.Hour), true
	if f.cfg.LeaseExpiry != nil {
		expiry, ok = f.cfg.LeaseExpiry(c)
	}
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "lease not granted: LSN is behind the GC cutoff")
	}
	return &pageapi.LeaseLsnResponse{Expires: timestamppb.New(expiry)}, nil
}

func (f *FakeGRPC) stall(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-f.close:
		return status.Error(codes.Unavailable, "fake closed")
	}
}

// trackingListener remembers its connections so that the fake can cut them (a
// pageserver that goes away mid-stream, without a status).
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns[c] = true
	l.mu.Unlock()
	return c, nil
}

func (l *trackingListener) cutAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Close()
		delete(l.conns, c)
	}
}
