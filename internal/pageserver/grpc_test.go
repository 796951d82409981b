package pageserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageserver/pageapi"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/spec"
)

func grpcOpts(f *pageservertest.FakeGRPC, dir string) pageserver.BasebackupOptions {
	return pageserver.BasebackupOptions{
		PGData: dir, Protocol: spec.ProtocolGRPC, Connstr: f.URL(), ShardID: "0000", Token: token,
		TenantID: tenant, TimelineID: timeline, Mode: spec.ModeTypePrimary,
		Attempts: 1, Backoff: time.Millisecond,
	}
}

// bigArchive has enough data for a drop or a stall in the middle to be the middle.
func bigArchive(t *testing.T) []byte {
	var entries []pageservertest.Entry
	for i := range 20 {
		entries = append(entries, pageservertest.Entry{Name: fmt.Sprintf("base/1/%d", 1000+i), Body: strings.Repeat(fmt.Sprintf("row %d;", i), 20000)})
	}
	return pageservertest.MustBuildArchive(t, entries)
}

// GetBaseBackup against grpc-go: the request's fields and metadata are Neon's, the
// archive lands in PGDATA, the byte count is the archive's.
func TestBasebackupGRPC(t *testing.T) {
	archive := smallArchive(t)
	for _, tc := range []struct {
		name    string
		mode    spec.ModeType
		lsn     string
		wantLSN uint64
		replica bool
		shard   string
	}{
		{"primary at lsn", spec.ModeTypePrimary, "0/169AD58", 0x169AD58, false, "0000"},
		{"static, sharded", spec.ModeTypeStatic, "1/2A", 1<<32 | 0x2A, true, "0004"},
		{"replica latest", spec.ModeTypeReplica, "0/0", 0, true, "0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Token: token, Archive: archive, ChunkSize: 100})
			dir := filepath.Join(t.TempDir(), "pgdata")
			o := grpcOpts(f, dir)
			o.Mode, o.LSN, o.ShardID = tc.mode, tc.lsn, tc.shard
			st, err := pageserver.Basebackup(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if st.Attempts != 1 || st.Bytes != int64(len(archive)) {
				t.Errorf("stats %+v, want 1 attempt and %d bytes", st, len(archive))
			}
			if b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION")); err != nil || string(b) != "15\n" {
				t.Errorf("PG_VERSION: %q %v", b, err)
			}
			calls := f.Calls()
			if len(calls) != 1 {
				t.Fatalf("calls %+v", calls)
			}
			c := calls[0]
			want := pageservertest.GRPCCall{Method: "GetBaseBackup", TenantID: tenant, TimelineID: timeline, ShardID: tc.shard,
				Auth: "Bearer " + token, LSN: tc.wantLSN, Replica: tc.replica,
				Compression: pageapi.BaseBackupCompression_BASE_BACKUP_COMPRESSION_GZIP}
			if c != want {
				t.Errorf("call %+v, want %+v", c, want)
			}
		})
	}
}

// The bad inputs and faults of the libpq path, over gRPC: the same retries, the same
// bounded waits, an error that says what happened, the token never in it.
func TestBasebackupGRPCFaults(t *testing.T) {
	archive := bigArchive(t)
	tests := []struct {
		name     string
		faults   pageservertest.GRPCFaults
		token    string
		attempts int
		wantErr  string
		wantBB   int
	}{
		{"fails twice, then works", pageservertest.GRPCFaults{FailFirst: 2}, token, 3, "", 3},
		{"keeps failing", pageservertest.GRPCFaults{FailFirst: 9}, token, 2, "UNAVAILABLE", 2},
		{"dropped mid-stream", pageservertest.GRPCFaults{DropAfterBytes: len(archive) / 2}, token, 2, "after 2 attempts", 2},
		{"error after the data", pageservertest.GRPCFaults{ErrorAfterData: true}, token, 2, "error after the data", 2},
		{"wrong token", pageservertest.GRPCFaults{}, "not-the-token", 1, "UNAUTHENTICATED", 0},
		{"stall before the data", pageservertest.GRPCFaults{Stall: true}, token, 2, "pageserver stalled: no data for 200ms", 2},
		{"stall mid-stream", pageservertest.GRPCFaults{Stall: true, StallAfterBytes: len(archive) / 2}, token, 2, "pageserver stalled: no data for 200ms", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Token: token, Archive: archive, ChunkSize: 4096, Faults: tc.faults})
			o := grpcOpts(f, t.TempDir())
			o.Token, o.Attempts, o.IdleTimeout = tc.token, tc.attempts, 200*time.Millisecond
			st, err := pageserver.Basebackup(context.Background(), o)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			if err != nil && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error leaks the token: %v", err)
			}
			if st.Attempts != tc.attempts || f.Basebackups() != tc.wantBB {
				t.Errorf("attempts %d, calls %d; want %d and %d", st.Attempts, f.Basebackups(), tc.attempts, tc.wantBB)
			}
		})
	}
}

// A pageserver that is down (connection refused) and one that accepts connections but
// never speaks fail each attempt, bounded, and are retried.
func TestBasebackupGRPCServerDown(t *testing.T) {
	f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Archive: smallArchive(t)})
	f.Close()
	o := grpcOpts(f, t.TempDir())
	o.Attempts = 2
	st, err := pageserver.Basebackup(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "connection refused") || st.Attempts != 2 {
		t.Fatalf("refused: %v (%d attempts)", err, st.Attempts)
	}

	// A TCP listener that accepts and says nothing (no HTTP/2 settings frame).
	l := listenSilently(t)
	o.Connstr, o.IdleTimeout = "grpc://"+l, 200*time.Millisecond
	_, err = pageserver.Basebackup(context.Background(), o)
	var stall *pageserver.StallError
	if !errors.As(err, &stall) {
		t.Fatalf("silent server: %v, want a stall", err)
	}
}

// The context ends a stalled gRPC attempt before the idle bound.
func TestBasebackupGRPCHonoursContext(t *testing.T) {
	f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Archive: smallArchive(t), Faults: pageservertest.GRPCFaults{Stall: true}})
	o := grpcOpts(f, t.TempDir())
	o.IdleTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for f.Basebackups() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := pageserver.Basebackup(ctx, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func TestLeaseLSNGRPC(t *testing.T) {
	until := time.Unix(1_900_000_000, 123_000_000)
	target := func(f *pageservertest.FakeGRPC) pageserver.GRPCTarget {
		return pageserver.GRPCTarget{URL: f.URL(), TenantID: tenant, TimelineID: timeline, ShardID: "0102", Token: token}
	}
	f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Token: token,
		LeaseExpiry: func(c pageservertest.GRPCCall) (time.Time, bool) { return until, c.LSN != 0x100 }})
	got, err := pageserver.LeaseLSNGRPC(context.Background(), 0, target(f), "0/16b5a50")
	if err != nil || !got.Equal(until) {
		t.Fatalf("lease: %v %v, want %v", got, err, until)
	}
	c := f.Calls()[0]
	if c.Method != "LeaseLsn" || c.LSN != 0x16B5A50 || c.ShardID != "0102" || c.TenantID != tenant || c.Auth != "Bearer "+token {
		t.Errorf("call %+v", c)
	}
	if _, err := pageserver.LeaseLSNGRPC(context.Background(), 0, target(f), "0/100"); !errors.Is(err, pageserver.ErrLeaseNotGranted) {
		t.Errorf("behind the GC cutoff: %v, want ErrLeaseNotGranted", err)
	}
	if _, err := pageserver.LeaseLSNGRPC(context.Background(), 0, target(f), "16b5a50"); err == nil || !strings.Contains(err.Error(), "invalid LSN") {
		t.Errorf("bad lsn: %v", err)
	}

	f.SetFaults(pageservertest.GRPCFaults{LeaseError: "tenant is moving"})
	if _, err := pageserver.LeaseLSNGRPC(context.Background(), 0, target(f), "0/16b5a50"); err == nil ||
		errors.Is(err, pageserver.ErrLeaseNotGranted) || !strings.Contains(err.Error(), "tenant is moving") {
		t.Errorf("server error: %v", err)
	}
	f.SetFaults(pageservertest.GRPCFaults{Stall: true})
	var stall *pageserver.StallError
	if _, err := pageserver.LeaseLSNGRPC(context.Background(), 200*time.Millisecond, target(f), "0/16b5a50"); !errors.As(err, &stall) {
		t.Errorf("stall: %v, want a StallError", err)
	}
	f.Close()
	if _, err := pageserver.LeaseLSNGRPC(context.Background(), 0, target(f), "0/16b5a50"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("server down: %v", err)
	}
}

// listenSilently accepts connections on 127.0.0.1 and never writes to them; it returns
// the address.
func listenSilently(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return l.Addr().String()
}

// A call that ends with status OK before any message (grpc-go sends it as a
// trailers-only response) is an error, not a nil stream (which used to panic).
func TestBasebackupGRPCNoMessage(t *testing.T) {
	f := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Token: token, Archive: nil})
	_, err := pageserver.Basebackup(context.Background(), grpcOpts(f, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "the call ended without a message") {
		t.Fatalf("error %v, want the call ended without a message", err)
	}
}
