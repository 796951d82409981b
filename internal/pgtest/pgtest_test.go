package pgtest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestStartConnectStop(t *testing.T) {
	inst := Start(t, WithSetting("application_name", "it's pgtest"))
	if !strings.HasPrefix(inst.Connstr(), "postgresql://cloud_admin@/postgres?") {
		t.Fatalf("connstr %q", inst.Connstr())
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, inst.Connstr())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var user, port, fsync, app string
	var super bool
	if err := conn.QueryRow(ctx, `SELECT current_user, current_setting('port'), current_setting('fsync'),
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
		(SELECT reset_val FROM pg_settings WHERE name = 'application_name')`).Scan(&user, &port, &fsync, &super, &app); err != nil {
		t.Fatal(err)
	}
	if user != AdminUser || !super || fsync != "off" || port != strconv.Itoa(inst.Port) {
		t.Fatalf("got user=%s super=%v fsync=%s port=%s, want %s true off %d", user, super, fsync, port, AdminUser, inst.Port)
	}
	if app != "it's pgtest" {
		t.Fatalf("server-level application_name = %q, want the quoted setting", app)
	}
	if _, err := os.Stat(inst.LogFile); err != nil {
		t.Fatalf("log file: %v", err)
	}
	inst.Stop()
	if _, err := os.Stat(inst.SocketDir); !os.IsNotExist(err) {
		t.Fatalf("directory %s still there after Stop: %v", inst.SocketDir, err)
	}
	inst.Stop() // idempotent
}

func TestSettingIsApplied(t *testing.T) {
	inst := Start(t, WithSetting("log_statement", "all"), WithSetting("work_mem", "5MB"))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, inst.TCPConnstr(AdminUser, "", "postgres"))
	if err != nil {
		t.Fatalf("connect over TCP: %v", err)
	}
	defer conn.Close(ctx)
	var wm string
	if err := conn.QueryRow(ctx, "SELECT current_setting('work_mem') /* pgtest-marker */").Scan(&wm); err != nil {
		t.Fatal(err)
	}
	if wm != "5MB" {
		t.Fatalf("work_mem = %s, want 5MB", wm)
	}
	if !strings.Contains(inst.ReadLog(t), "pgtest-marker") {
		t.Fatalf("log_statement=all did not log the statement; log:\n%s", inst.ReadLog(t))
	}
}
