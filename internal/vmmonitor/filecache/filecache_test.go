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
// on vanilla PostgreSQL), Set runs ALTER SYSTEM and the reload, and new sessions see the
// new value.
func TestSetPlaceholder(t *testing.T) {
	inst := pgtest.Start(t)
	ctx := context.Background()
	log, logs := newLog()
	p := New(inst.Connstr(), log)
	defer p.Close()

	// Only the limit, no max: nothing to cap with, so nothing is done.
	appendConf(t, inst, "neon.file_cache_size_limit = '128MB'\n")
	waitSetting(t, inst, LimitSetting, "128MB")
	res, err := p.Set(ctx, 1461*MiB)
	if err != nil || res.Applied || res.Reason != "neon.max_file_cache_size is not set, so the cache cannot be capped" {
		t.Fatalf("Set without a max = %+v, %v", res, err)
	}

	appendConf(t, inst, "neon.max_file_cache_size = '1GB'\n")
	waitSetting(t, inst, MaxSetting, "1GB")
	s, err := p.Probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Setting{Known: true, Defined: false, LimitBytes: 128 * MiB, MaxBytes: 1024 * MiB, HaveMax: true}); s != want {
		t.Errorf("Probe = %+v, want %+v (a placeholder is not in pg_settings)", s, want)
	}

	// 1461 MiB (the size for a 2 GiB target) is capped by the 1 GB maximum.
	res, err = p.Set(ctx, 1461*MiB)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Applied: true, Bytes: 1024 * MiB, Capped: true, MaxBytes: 1024 * MiB}); res != want {
		t.Errorf("Set(1461 MiB) = %+v, want %+v", res, want)
	}
	if c := autoConf(t, inst); !strings.Contains(c, "neon.file_cache_size_limit = '1024MB'\n") {
		t.Errorf("postgresql.auto.conf:\n%s", c)
	}
	waitSetting(t, inst, LimitSetting, "1024MB")
	if !strings.Contains(logs.String(), `msg="updated file cache size" size_mib=1024 max_mib=1024 capped=true was_mib=128 placeholder=true`) {
		t.Errorf("log:\n%s", logs)
	}

	// Below the cap; a size that is not a whole MiB is rounded down.
	res, err = p.Set(ctx, 698*MiB+12345)
	if err != nil || res != (Result{Applied: true, Bytes: 698 * MiB, MaxBytes: 1024 * MiB}) {
		t.Fatalf("Set(698 MiB + 12345) = %+v, %v", res, err)
	}
	waitSetting(t, inst, LimitSetting, "698MB")

	// The connection breaks (terminated by the server): the next Set reconnects and
	// succeeds.
	admin := connect(t, inst)
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, AppName).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the vm-monitor's backend: %d, %v", n, err)
	}
	res, err = p.Set(ctx, 300*MiB)
	if err != nil || !res.Applied || res.Bytes != 300*MiB {
		t.Fatalf("Set after the connection broke = %+v, %v", res, err)
	}
	waitSetting(t, inst, LimitSetting, "300MB")
	if !strings.Contains(logs.String(), "postgres connection broke, retrying on a new one") {
		t.Errorf("the retry was not logged:\n%s", logs)
	}
	// A zero size (a target too small for a cache) is set as 0MB.
	if res, err := p.Set(ctx, 0); err != nil || res.Bytes != 0 || !res.Applied {
		t.Fatalf("Set(0) = %+v, %v", res, err)
	}
	waitSetting(t, inst, LimitSetting, "0MB")
}

// PostgreSQL 15 facts the package comment relies on: ALTER SYSTEM of a dotted name the
// session has never seen fails, and a value from the command line outranks
// postgresql.auto.conf after a reload.
func TestPlaceholderFacts(t *testing.T) {
	inst := pgtest.Start(t, pgtest.WithSetting(LimitSetting, "128MB"), pgtest.WithSetting(MaxSetting, "1GB"))
	ctx := context.Background()
	conn := connect(t, inst)
	_, err := conn.Exec(ctx, "ALTER SYSTEM SET neon.never_seen = '1'")
	if err == nil || !strings.Contains(err.Error(), `unrecognized configuration parameter "neon.never_seen"`) {
		t.Errorf("ALTER SYSTEM of an unknown dotted name = %v", err)
	}

	log, _ := newLog()
	p := New(inst.Connstr(), log)
	defer p.Close()
	res, err := p.Set(ctx, 512*MiB)
	if err != nil || !res.Applied {
		t.Fatalf("Set = %+v, %v", res, err)
	}
	if c := autoConf(t, inst); !strings.Contains(c, "neon.file_cache_size_limit = '512MB'") {
		t.Errorf("postgresql.auto.conf:\n%s", c)
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
