package filecache

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/vmmonitor/sizing"
)

const MiB = sizing.MiB

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

func connect(t *testing.T, inst *pgtest.Instance) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// setting reads a setting on a new connection, which sees the server's configuration as
// of its start ("" when unknown).
func setting(t *testing.T, inst *pgtest.Instance, name string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v *string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1, true)", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		return ""
	}
	return *v
}

// waitSetting waits (at most 10 s) until new connections see name = want: a reload is
// asynchronous.
func waitSetting(t *testing.T, inst *pgtest.Instance, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := setting(t, inst, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q (waited 10 s for the reload)", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func autoConf(t *testing.T, inst *pgtest.Instance) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(inst.DataDir, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// appendConf adds lines to postgresql.conf and reloads.
func appendConf(t *testing.T, inst *pgtest.Instance, lines string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(inst.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	inst.Reload(t)
}

// Vanilla PostgreSQL 15 has no neon.file_cache_size_limit: Set does nothing, says why,
// and writes nothing.
func TestSetWithoutNeon(t *testing.T) {
	inst := pgtest.Start(t)
	log, logs := newLog()
	p := New(inst.Connstr(), log)
	defer p.Close()
	ctx := context.Background()

	s, err := p.Probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Known || s.Defined || s.HaveMax {
		t.Errorf("Probe on vanilla PostgreSQL = %+v, want nothing known", s)
	}
	res, err := p.Set(ctx, 1461*MiB)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if res.Applied || res.Reason != "neon.file_cache_size_limit is not a setting of this server (no neon extension)" {
		t.Errorf("Set = %+v, want not applied with the reason", res)
	}
	if !strings.Contains(logs.String(), `msg="file cache not resized" reason="neon.file_cache_size_limit is not a setting of this server (no neon extension)" wanted_mib=1461`) {
		t.Errorf("no clear log line:\n%s", logs)
	}
	if c := autoConf(t, inst); strings.Contains(c, "neon") {
		t.Errorf("postgresql.auto.conf changed:\n%s", c)
	}
}

// With the settings as placeholders in postgresql.conf (what a neon spec's settings give
// on vanilla PostgreSQL): Probe sees them, but Set resizes nothing (a placeholder is a
// string nothing reads), says why, and writes nothing.
func TestSetPlaceholder(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	log, logs := newLog()
	p := New(inst.Connstr(), log)
	defer p.Close()

	appendConf(t, inst, "neon.file_cache_size_limit = '128MB'\nneon.max_file_cache_size = '1GB'\n")
	waitSetting(t, inst, MaxSetting, "1GB")
	s, err := p.Probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Setting{Known: true, Defined: false, LimitBytes: 128 * MiB, MaxBytes: 1024 * MiB, HaveMax: true}); s != want {
		t.Errorf("Probe = %+v, want %+v (a placeholder is not in pg_settings)", s, want)
	}
	res, err := p.Set(ctx, 1461*MiB)
	if err != nil {
		t.Fatal(err)
	}
	const reason = "neon.file_cache_size_limit is only a placeholder here (the neon extension's library is not loaded), so resizing it would change nothing"
	if res.Applied || res.Reason != reason {
		t.Errorf("Set on a placeholder = %+v, want not applied with the reason", res)
	}
	if !strings.Contains(logs.String(), `msg="file cache not resized" reason="`+reason+`" wanted_mib=1461`) {
		t.Errorf("no clear log line:\n%s", logs)
	}
	if c := autoConf(t, inst); strings.Contains(c, "neon") {
		t.Errorf("postgresql.auto.conf changed:\n%s", c)
	}
	if got := setting(t, inst, LimitSetting); got != "128MB" {
		t.Errorf("%s = %q after Set, want the untouched 128MB", LimitSetting, got)
	}
}

// definedPG is a PG whose two settings are ones vanilla PostgreSQL defines (in
// pg_settings), with the units of the neon extension's (MB): wal_keep_size (GUC_UNIT_MB,
// reloadable, 0 by default) stands in for neon.file_cache_size_limit and max_wal_size
// (1GB by default) for neon.max_file_cache_size, so that the path of a real setting runs
// against a real server.
func definedPG(inst *pgtest.Instance) (*PG, *logBuf) {
	log, logs := newLog()
	p := New(inst.Connstr(), log)
	p.limitName, p.maxName = "wal_keep_size", "max_wal_size"
	return p, logs
}

// A defined setting: Set caps, rounds, runs ALTER SYSTEM and the reload, and new
// sessions see the new value; an unchanged size is not written again; a broken
// connection is replaced.
func TestSetDefined(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting("log_statement", "all"))
	ctx := context.Background()
	p, logs := definedPG(inst)
	defer p.Close()

	s, err := p.Probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Setting{Known: true, Defined: true, LimitBytes: 0, MaxBytes: 1024 * MiB, HaveMax: true}); s != want {
		t.Errorf("Probe = %+v, want %+v", s, want)
	}

	// No maximum: nothing to cap with, so nothing is done.
	p.maxName = MaxSetting
	res, err := p.Set(ctx, 1461*MiB)
	if err != nil || res.Applied || res.Reason != "neon.max_file_cache_size is not set, so the cache cannot be capped" {
		t.Fatalf("Set without a max = %+v, %v", res, err)
	}
	p.maxName = "max_wal_size"

	// 1461 MiB (the size for a 2 GiB target) is capped by the 1 GB maximum.
	res, err = p.Set(ctx, 1461*MiB)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Applied: true, Bytes: 1024 * MiB, Capped: true, MaxBytes: 1024 * MiB}); res != want {
		t.Errorf("Set(1461 MiB) = %+v, want %+v", res, want)
	}
	if c := autoConf(t, inst); !strings.Contains(c, "wal_keep_size = '1024MB'\n") {
		t.Errorf("postgresql.auto.conf:\n%s", c)
	}
	waitSetting(t, inst, "wal_keep_size", "1GB")
	if !strings.Contains(logs.String(), `msg="updated file cache size" size_mib=1024 max_mib=1024 capped=true was_mib=0`) {
		t.Errorf("log:\n%s", logs)
	}

	// The same size again (a reconnecting agent): no ALTER SYSTEM, no reload (the server
	// logs every statement).
	alters := func() int { return strings.Count(inst.ReadLog(t), `ALTER SYSTEM SET "wal_keep_size"`) }
	if n := alters(); n != 1 {
		t.Fatalf("%d ALTER SYSTEM in the server's log, want 1", n)
	}
	res, err = p.Set(ctx, 1461*MiB)
	if err != nil || res != (Result{Applied: true, Unchanged: true, Bytes: 1024 * MiB, Capped: true, MaxBytes: 1024 * MiB}) {
		t.Fatalf("Set of an unchanged size = %+v, %v", res, err)
	}
	if n := alters(); n != 1 {
		t.Errorf("an unchanged size was written again: %d ALTER SYSTEM in the server's log", n)
	}

	// Below the cap; a size that is not a whole MiB is rounded down.
	res, err = p.Set(ctx, 698*MiB+12345)
	if err != nil || res != (Result{Applied: true, Bytes: 698 * MiB, MaxBytes: 1024 * MiB}) {
		t.Fatalf("Set(698 MiB + 12345) = %+v, %v", res, err)
	}
	waitSetting(t, inst, "wal_keep_size", "698MB")

	// The server's value differs from what Set wrote last (changed by someone else):
	// written again although Set's record says 698.
	admin := connect(t, inst)
	if _, err := admin.Exec(ctx, "ALTER SYSTEM SET wal_keep_size = '5MB'"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	waitSetting(t, inst, "wal_keep_size", "5MB")

	// The connection breaks (terminated by the server): the next Set reconnects and
	// succeeds.
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, AppName).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the vm-monitor's backend: %d, %v", n, err)
	}
	res, err = p.Set(ctx, 698*MiB)
	if err != nil || !res.Applied || res.Unchanged || res.Bytes != 698*MiB {
		t.Fatalf("Set after the connection broke, the value changed meanwhile = %+v, %v", res, err)
	}
	waitSetting(t, inst, "wal_keep_size", "698MB")
	if !strings.Contains(logs.String(), "postgres connection broke, retrying on a new one") {
		t.Errorf("the retry was not logged:\n%s", logs)
	}
	// A zero size (a target too small for a cache) is set as 0MB.
	if res, err := p.Set(ctx, 0); err != nil || res.Bytes != 0 || !res.Applied || res.Unchanged {
		t.Fatalf("Set(0) = %+v, %v", res, err)
	}
	waitSetting(t, inst, "wal_keep_size", "0")
}

// PostgreSQL 15 facts the package relies on: ALTER SYSTEM with the quoted dotted name
// ("neon"."file_cache_size_limit") sets neon.file_cache_size_limit; a dotted name the
// session has never seen cannot be set; a value from the command line outranks
// postgresql.auto.conf after a reload.
func TestAlterSystemFacts(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting(LimitSetting, "128MB"), pgtest.WithSetting(MaxSetting, "1GB"))
	ctx := context.Background()
	conn := connect(t, inst)
	_, err := conn.Exec(ctx, "ALTER SYSTEM SET neon.never_seen = '1'")
	if err == nil || !strings.Contains(err.Error(), `unrecognized configuration parameter "neon.never_seen"`) {
		t.Errorf("ALTER SYSTEM of an unknown dotted name = %v", err)
	}
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET "+settingIdent(LimitSetting)+" = '512MB'"); err != nil {
		t.Fatal(err)
	}
	if c := autoConf(t, inst); !strings.Contains(c, "neon.file_cache_size_limit = '512MB'") {
		t.Errorf("postgresql.auto.conf:\n%s", c)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	// Wait for the reload to be processed (a setting from the file that -c does not
	// override changes), then check the -c value stayed.
	appendConf(t, inst, "neon.reload_marker = 'yes'\n")
	waitSetting(t, inst, "neon.reload_marker", "yes")
	if got := setting(t, inst, LimitSetting); got != "128MB" {
		t.Errorf("%s after the reload = %q, want the command line's 128MB", LimitSetting, got)
	}
}

func TestResizingDisabled(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		s    *spec.ComputeSpec
		want bool
	}{
		{nil, false},
		{&spec.ComputeSpec{}, false},
		{&spec.ComputeSpec{DisableLFCResizing: &no}, false},
		{&spec.ComputeSpec{DisableLFCResizing: &yes}, true},
	} {
		if got := ResizingDisabled(tt.s); got != tt.want {
			t.Errorf("ResizingDisabled(%+v) = %v, want %v", tt.s, got, tt.want)
		}
	}
}
