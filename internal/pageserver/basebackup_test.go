package pageserver_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
)

const (
	tenant   = "9ef87a5bf0d92544f6fafeeb3239695c"
	timeline = "de200bd42b49cc1814412c7e592dd6e9"
	token    = "storage-token-3e1d"
)

// smallArchive is a tiny pageserver-like archive for protocol tests.
func smallArchive(t *testing.T) []byte {
	return pageservertest.MustBuildArchive(t, []pageservertest.Entry{
		{Name: "global/", Type: tar.TypeDir},
		{Name: "global/pg_control", Body: strings.Repeat("c", 8192)},
		{Name: "pg_dynshmem/", Type: tar.TypeDir},
		{Name: "pg_hba.conf", Body: "local all all trust\n"},
		{Name: "PG_VERSION", Body: "15\n"},
		{Name: "zenith.signal", Body: "PREV LSN: none\n"},
	})
}

func opts(f *pageservertest.FakePageserver, dir string) pageserver.BasebackupOptions {
	return pageserver.BasebackupOptions{
		PGData: dir, Connstr: f.Connstr(), Token: token,
		TenantID: tenant, TimelineID: timeline, Mode: spec.ModeTypePrimary,
		Attempts: 1, Backoff: time.Millisecond,
	}
}

func TestQueryTextAndStartup(t *testing.T) {
	archive := smallArchive(t)
	tests := []struct {
		name      string
		mode      spec.ModeType
		lsn, want string
	}{
		{"primary latest", spec.ModeTypePrimary, "", "basebackup " + tenant + " " + timeline + " --gzip"},
		{"primary at lsn", spec.ModeTypePrimary, "0/169ad58", "basebackup " + tenant + " " + timeline + " 0/169AD58 --gzip"},
		{"static at lsn", spec.ModeTypeStatic, "1/2A", "basebackup " + tenant + " " + timeline + " 1/2A --gzip --replica"},
		{"replica latest", spec.ModeTypeReplica, "0/0", "basebackup " + tenant + " " + timeline + " --gzip --replica"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive})
			o := opts(f, filepath.Join(t.TempDir(), "pgdata"))
			o.Mode, o.LSN = tc.mode, tc.lsn
			st, err := pageserver.Basebackup(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if st.Attempts != 1 || st.Bytes != int64(len(archive)) {
				t.Errorf("stats %+v, want 1 attempt and %d bytes", st, len(archive))
			}
			sess := f.Sessions()
			if len(sess) != 1 {
				t.Fatalf("%d sessions, want 1", len(sess))
			}
			s := sess[0]
			if len(s.Queries) != 1 || s.Queries[0] != tc.want {
				t.Errorf("queries %q, want [%q]", s.Queries, tc.want)
			}
			if s.Password != token {
				t.Errorf("password %q, want the token", s.Password)
			}
			if got, want := s.Params["options"], "-c neon.compute_mode="+string(tc.mode); got != want {
				t.Errorf("options %q, want %q", got, want)
			}
			if s.Params["application_name"] != "compute_ctl" {
				t.Errorf("application_name %q", s.Params["application_name"])
			}
			if b, err := os.ReadFile(filepath.Join(o.PGData, "global", "pg_control")); err != nil || len(b) != 8192 {
				t.Errorf("pg_control: %d bytes, %v", len(b), err)
			}
		})
	}
}

func TestPasswordAndConnstrForms(t *testing.T) {
	archive := smallArchive(t)
	tests := []struct {
		name    string
		connstr func(f *pageservertest.FakePageserver) string
		token   string
		want    string
	}{
		{"token overrides url password", func(f *pageservertest.FakePageserver) string {
			return "postgresql://no_user:connpw@" + f.Addr
		}, token, token},
		{"url password without token", func(f *pageservertest.FakePageserver) string {
			return "postgres://no_user:connpw@" + f.Addr
		}, "", "connpw"},
		{"key=value, second shard ignored", func(f *pageservertest.FakePageserver) string {
			return fmt.Sprintf("host=127.0.0.1 port=%d user=no_user password=x,postgresql://other:1", f.Port())
		}, token, token},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.Start(t, pageservertest.Options{Password: tc.want, Archive: archive})
			o := opts(f, t.TempDir())
			o.Connstr, o.Token = tc.connstr(f), tc.token
			if _, err := pageserver.Basebackup(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			if s := f.Sessions(); len(s) != 1 || s[0].Password != tc.want {
				t.Errorf("sessions %+v, want one with password %q", s, tc.want)
			}
		})
	}
}

func TestWrongTokenFailsAndIsNotLeaked(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Password: "the-right-one", Archive: smallArchive(t)})
	o := opts(f, t.TempDir())
	o.Attempts = 2
	st, err := pageserver.Basebackup(context.Background(), o)
	if err == nil {
		t.Fatal("basebackup with a wrong token succeeded")
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error leaks the token: %v", err)
	}
	if !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("error %q does not say why", err)
	}
	if st.Attempts != 2 || len(f.Sessions()) != 2 {
		t.Errorf("attempts %d, sessions %d; want 2 and 2", st.Attempts, len(f.Sessions()))
	}
}

func TestRefusedStartupRetried(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Archive: smallArchive(t), Faults: pageservertest.Faults{RefuseStartup: true}})
	o := opts(f, t.TempDir())
	o.Attempts = 3
	st, err := pageserver.Basebackup(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "refusing connections") || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("error %v, want the refusal after 3 attempts", err)
	}
	if st.Attempts != 3 || len(f.Sessions()) != 3 {
		t.Errorf("attempts %d, sessions %d; want 3 and 3", st.Attempts, len(f.Sessions()))
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	archive := smallArchive(t)
	f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive, Faults: pageservertest.Faults{FailFirst: 2}})
	o := opts(f, t.TempDir())
	o.Attempts = 5
	st, err := pageserver.Basebackup(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Attempts != 3 || f.Basebackups() != 3 {
		t.Errorf("attempts %d, basebackup queries %d; want 3 and 3", st.Attempts, f.Basebackups())
	}
	if st.Bytes != int64(len(archive)) {
		t.Errorf("bytes %d, want %d (the successful attempt only)", st.Bytes, len(archive))
	}
	if _, err := os.Stat(filepath.Join(o.PGData, "PG_VERSION")); err != nil {
		t.Error(err)
	}
}

func TestStreamFaults(t *testing.T) {
	// A bigger archive so that dropping in the middle really is the middle.
	var entries []pageservertest.Entry
	for i := range 20 {
		entries = append(entries, pageservertest.Entry{Name: fmt.Sprintf("base/1/%d", 1000+i), Body: strings.Repeat(fmt.Sprintf("row %d;", i), 20000)})
	}
	archive := pageservertest.MustBuildArchive(t, entries)
	tests := []struct {
		name     string
		faults   pageservertest.Faults
		attempts int
		wantErr  string
		wantBB   int
	}{
		{"dropped mid-stream", pageservertest.Faults{DropAfterBytes: len(archive) / 2}, 3, "after 3 attempts", 3},
		{"error after the data", pageservertest.Faults{ErrorAfterData: true}, 2, "injected error after the data", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive, ChunkSize: 4096, Faults: tc.faults})
			o := opts(f, t.TempDir())
			o.Attempts = tc.attempts
			st, err := pageserver.Basebackup(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			if st.Attempts != tc.attempts || f.Basebackups() != tc.wantBB {
				t.Errorf("attempts %d, queries %d; want %d and %d", st.Attempts, f.Basebackups(), tc.attempts, tc.wantBB)
			}
		})
	}
}

func TestContextEndsBackoff(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Archive: smallArchive(t), Faults: pageservertest.Faults{FailFirst: 100}})
	o := opts(f, t.TempDir())
	o.Attempts, o.Backoff = 11, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for f.Basebackups() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	st, err := pageserver.Basebackup(ctx, o)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("error %v, want context.Canceled with the last error", err)
	}
	if st.Attempts != 1 {
		t.Errorf("attempts %d, want 1", st.Attempts)
	}
}

func TestSlowStartHonoursContext(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Archive: smallArchive(t), Faults: pageservertest.Faults{StartDelay: time.Minute}})
	o := opts(f, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := pageserver.Basebackup(ctx, o); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
}

func TestBadOptions(t *testing.T) {
	base := pageserver.BasebackupOptions{PGData: t.TempDir(), Connstr: "postgresql://no_user@127.0.0.1:1", TenantID: tenant, TimelineID: timeline, Mode: spec.ModeTypePrimary, Attempts: 1}
	tests := []struct {
		name   string
		change func(*pageserver.BasebackupOptions)
		want   string
	}{
		{"grpc url as libpq", func(o *pageserver.BasebackupOptions) { o.Connstr = "grpc://ps:51051" }, "not a libpq connstring"},
		{"libpq url as grpc", func(o *pageserver.BasebackupOptions) {
			o.Protocol = spec.ProtocolGRPC
		}, "pageserver: grpc_url"},
		{"grpc url without port", func(o *pageserver.BasebackupOptions) {
			o.Protocol, o.Connstr = spec.ProtocolGRPC, "grpc://ps"
		}, "want grpc://host:port"},
		{"unknown protocol", func(o *pageserver.BasebackupOptions) { o.Protocol = "http3" }, "unknown pageserver protocol"},
		{"empty connstr", func(o *pageserver.BasebackupOptions) { o.Connstr = "" }, "empty pageserver connstring"},
		{"bad mode", func(o *pageserver.BasebackupOptions) { o.Mode = "Primary" }, "unknown compute mode"},
		{"bad tenant", func(o *pageserver.BasebackupOptions) { o.TenantID = "x; drop" }, "not hex"},
		{"bad lsn", func(o *pageserver.BasebackupOptions) { o.LSN = "12" }, "invalid LSN"},
		{"no pgdata", func(o *pageserver.BasebackupOptions) { o.PGData = "" }, "empty PGDATA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.change(&o)
			_, err := pageserver.Basebackup(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	o := base
	o.Connstr = "grpc://ps:51051,postgresql://x@y"
	if _, err := pageserver.Basebackup(context.Background(), o); !errors.Is(err, pageserver.ErrGRPCInLibpq) {
		t.Errorf("grpc: %v, want ErrGRPCInLibpq", err)
	}
}

// TestBasebackupOfRealPostgresStarts is the end-to-end proof: a real PG15 basebackup,
// served by the fake, unpacked and finished, starts as a server that answers SELECT 1.
func TestBasebackupOfRealPostgresStarts(t *testing.T) {
	archive := pageservertest.BasebackupArchive(t)
	f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive})

	uid, gid := pgtest.OSUserIDs(t)
	root := pgtest.OwnedDir(t, "storage-test-")
	pgdir := filepath.Join(root, "pgdata")
	if err := (pgdata.Dir{Path: pgdir}).PrepareFresh(); err != nil {
		t.Fatal(err)
	}
	o := opts(f, pgdir)
	st, err := pageserver.Basebackup(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(len(archive)) || st.Attempts != 1 || st.Duration <= 0 {
		t.Errorf("stats %+v", st)
	}
	if _, err := os.Stat(filepath.Join(pgdir, "postgresql.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("postgresql.conf should not come with the basebackup: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(pgdir, "neon.signal")); err != nil || string(b) != pageservertest.NeonSignal {
		t.Errorf("neon.signal %q, %v", b, err)
	}
	// Private modes everywhere.
	err = filepath.WalkDir(pgdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Mode().Perm() != 0o700 || fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (pgdata.Dir{Path: pgdir, NoSync: true}).FinishNeon(spec.ModeTypePrimary,
		pgdata.Auth{AdminRole: pgtest.AdminUser, OSUsers: paths.AdminOSUsers()}); err != nil {
		t.Fatal(err)
	}

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("port = %d\nunix_socket_directories = '%s'\nlisten_addresses = '127.0.0.1'\nfsync = off\n", port, root)
	if err := os.WriteFile(filepath.Join(pgdir, "postgresql.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(pgdir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	bin := pageservertest.BinDir()
	logFile := filepath.Join(root, "log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := execx.Run(ctx, execx.Cmd{Path: filepath.Join(bin, "pg_ctl"), Args: []string{"start", "-w", "-D", pgdir, "-l", logFile}, User: pgtest.OSUser}); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("%v\n%s", err, log)
	}
	t.Cleanup(func() {
		_, _ = execx.Run(context.Background(), execx.Cmd{Path: filepath.Join(bin, "pg_ctl"), Args: []string{"stop", "-w", "-m", "immediate", "-D", pgdir}, User: pgtest.OSUser})
	})
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=postgres", root, port, pgtest.AdminUser))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
	// The basebackup's pg_hba.conf trusts every local connection (initdb's defaults);
	// after FinishNeon, another OS user is the admin role neither over the socket (made
	// searchable for the check, so that Postgres itself must refuse) nor over TCP.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	pgtest.CheckStrangerRefused(t, root, port)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// A pageserver that goes silent fails the attempt after the idle timeout, wherever it
// stops: before its first byte, in the middle of the stream; the stall is retried like
// any failure and named in the error.
func TestStallFailsAfterIdleTimeout(t *testing.T) {
	var entries []pageservertest.Entry
	for i := range 10 {
		entries = append(entries, pageservertest.Entry{Name: fmt.Sprintf("base/1/%d", 1000+i), Body: strings.Repeat(fmt.Sprintf("row %d;", i), 20000)})
	}
	archive := pageservertest.MustBuildArchive(t, entries)
	tests := []struct {
		name   string
		faults pageservertest.Faults
		wantBB int
	}{
		{"at startup", pageservertest.Faults{StartDelay: time.Hour}, 0},
		{"before the data", pageservertest.Faults{Stall: true}, 2},
		{"mid-stream", pageservertest.Faults{Stall: true, StallAfterBytes: len(archive) / 2}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive, ChunkSize: 4096, Faults: tc.faults})
			o := opts(f, t.TempDir())
			o.Attempts, o.IdleTimeout = 2, 200*time.Millisecond
			st, err := pageserver.Basebackup(context.Background(), o)
			var stall *pageserver.StallError
			if !errors.As(err, &stall) || !strings.Contains(err.Error(), "pageserver stalled: no data for 200ms") ||
				!strings.Contains(err.Error(), "after 2 attempts") {
				t.Fatalf("error %v, want a stall after 2 attempts", err)
			}
			if st.Attempts != 2 || f.Basebackups() != tc.wantBB {
				t.Errorf("attempts %d, queries %d; want 2 and %d", st.Attempts, f.Basebackups(), tc.wantBB)
			}
		})
	}
}

// The idle timeout is no deadline: a transfer that takes several times as long but never
// pauses for that long completes.
func TestSlowMovingTransferIsNotCut(t *testing.T) {
	var entries []pageservertest.Entry
	for i := range 4 {
		entries = append(entries, pageservertest.Entry{Name: fmt.Sprintf("base/1/%d", 1000+i), Body: strings.Repeat(fmt.Sprintf("row %d;", i), 5000)})
	}
	archive := pageservertest.MustBuildArchive(t, entries)
	chunk := len(archive)/8 + 1
	f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive, ChunkSize: chunk,
		Faults: pageservertest.Faults{ChunkDelay: 100 * time.Millisecond}})
	o := opts(f, t.TempDir())
	o.IdleTimeout = 400 * time.Millisecond
	st, err := pageserver.Basebackup(context.Background(), o)
	if err != nil {
		t.Fatalf("a slow but moving transfer failed: %v", err)
	}
	if st.Bytes != int64(len(archive)) || st.Attempts != 1 {
		t.Errorf("stats %+v, want %d bytes in 1 attempt", st, len(archive))
	}
	if st.Duration <= o.IdleTimeout {
		// Not a timing assertion on our code: without it the test would prove nothing.
		t.Skipf("the transfer took %s, not longer than the idle timeout: nothing shown", st.Duration)
	}
}

// The context still ends an attempt that is waiting for data, before the idle timeout.
func TestStallHonoursContext(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Archive: smallArchive(t), Faults: pageservertest.Faults{Stall: true}})
	o := opts(f, t.TempDir())
	o.IdleTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for f.Basebackups() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_, err := pageserver.Basebackup(ctx, o)
	var stall *pageserver.StallError
	if !errors.Is(err, context.Canceled) || errors.As(err, &stall) {
		t.Fatalf("error %v, want context.Canceled and no stall", err)
	}
}
