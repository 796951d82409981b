package compute

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pageserver/lsnlease"
	"github.com/computetools/compute-tools/internal/pageserver/pageapi"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// A neon-mode prepare with pageserver_connection_info preferring gRPC gets PGDATA from
// the gRPC pageserver (shard 0 of two), not from the libpq one; Postgres gets the stripe
// size and no libpq connstring (none was given).
func TestPrepareNeonGRPC(t *testing.T) {
	r := newNeonRig(t)
	g := pageservertest.StartGRPC(t, pageservertest.GRPCOptions{Token: testToken, Archive: pageservertest.BasebackupArchive(t)})
	r.writeConfigWith(t, `{"Static": "0/2A3B4C8"}`, `"pageserver_connstring": "`+r.ps.Connstr()+`",
	  "pageserver_connection_info": {"shard_count": 2, "stripe_size": 2048, "prefer_protocol": "grpc", "shards": {
	    "0002": {"pageservers": [{"id": 1, "libpq_url": null, "grpc_url": "`+g.URL()+`"}]},
	    "0102": {"pageservers": [{"id": 2, "libpq_url": null, "grpc_url": "grpc://127.0.0.1:1"}]}}}`)
	if err := Prepare(context.Background(), r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	if q := r.ps.Queries(); len(q) != 0 {
		t.Errorf("the libpq pageserver was asked %q", q)
	}
	calls := g.Calls()
	want := pageservertest.GRPCCall{Method: "GetBaseBackup", TenantID: testTenant, TimelineID: testTimeline, ShardID: "0002",
		Auth: "Bearer " + testToken, LSN: 0x2A3B4C8, Replica: true, Compression: pageapi.BaseBackupCompression_BASE_BACKUP_COMPRESSION_GZIP}
	if len(calls) != 1 || calls[0] != want {
		t.Fatalf("grpc calls %+v, want [%+v]", calls, want)
	}
	for _, f := range []string{"PG_VERSION", "global/pg_control", "neon.signal", "standby.signal"} {
		if _, err := os.Stat(filepath.Join(r.cfg.PGData, f)); err != nil {
			t.Errorf("PGDATA lacks %s: %v", f, err)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(r.cfg.PGData, "postgresql.conf"))
	if !strings.Contains(string(conf), "neon.stripe_size=2048\n") || !strings.Contains(string(conf), "# no neon.pageserver_connstring\n") ||
		strings.Contains(string(conf), "neon.pageserver_connstring=") {
		t.Errorf("postgresql.conf storage settings:\n%s", conf)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Init || rec.Metrics.BasebackupBytes == 0 {
		t.Errorf("record %+v", rec)
	}

	// The lease loop of this Static compute asks every shard over gRPC.
	tg, ok, err := leaseTarget(r.cfg)
	if err != nil || !ok {
		t.Fatalf("lease target: %v %v", ok, err)
	}
	wantT := lsnlease.Target{Protocol: spec.ProtocolGRPC, Token: testToken, Tenant: testTenant, Timeline: testTimeline, LSN: "0/2A3B4C8",
		Shards: []lsnlease.Shard{
			{TenantShard: testTenant + "-0002", ShardID: "0002", URLs: []string{g.URL()}},
			{TenantShard: testTenant + "-0102", ShardID: "0102", URLs: []string{"grpc://127.0.0.1:1"}}}}
	if tg.Protocol != wantT.Protocol || tg.LSN != wantT.LSN || len(tg.Shards) != 2 ||
		tg.Shards[0].TenantShard != wantT.Shards[0].TenantShard || tg.Shards[1].ShardID != "0102" || tg.Shards[0].URLs[0] != g.URL() {
		t.Errorf("lease target %+v", tg)
	}
}

// A gRPC pageserver that is down fails the prepare after the bounded retries, with the
// reason in the record.
func TestPrepareNeonGRPCDown(t *testing.T) {
	r := newNeonRig(t)
	r.cfg.BasebackupAttempts = 2
	r.writeConfigWith(t, `"Replica"`, `"pageserver_connection_info": {"shard_count": 0, "stripe_size": null,
	  "prefer_protocol": "grpc", "shards": {"0000": {"pageservers": [{"id": 1, "libpq_url": null, "grpc_url": "grpc://127.0.0.1:1"}]}}}`)
	err := Prepare(context.Background(), r.cfg, r.deps)
	if err == nil || !strings.Contains(err.Error(), "after 2 attempts") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("prepare: %v", err)
	}
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || rec.Error == nil || !strings.Contains(*rec.Error, "basebackup") {
		t.Errorf("record %+v", rec)
	}
}
