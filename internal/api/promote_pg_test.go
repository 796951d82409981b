package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// POST /promote end to end on real PostgreSQL 15: a standby made with pg_basebackup,
// three concurrent calls (JSON and form) that wait for an LSN the primary writes only
// later, one promotion, the real configure step rewriting the config.
func TestPromoteHTTPRealStandby(t *testing.T) {
	primary := pgtest.Start(t)
	standby := pgtest.StartStandby(t, primary)
	h := newHarness(t, func(c *harnessConfig) {
		dir := c.ctl.Store.(*state.Store).Dir()
		c.ctl.Promoter = promote.New(promote.Options{Connstr: standby.Connstr(), Interval: 20 * time.Millisecond, Retries: 1500})
		c.ctl.WritePendingConfig = func(raw []byte) error { return os.WriteFile(paths.PendingConfigFile(dir), raw, 0o600) }
		c.ctl.ReadAppliedConfig = func() ([]byte, error) { return os.ReadFile(paths.AppliedConfigFile(dir)) }
	})
	dir := h.store.Dir()
	settings := compute.Settings{StateDir: dir, PGData: standby.DataDir, Connstr: standby.Connstr(), PrivilegedRole: "neon_superuser"}
	h.units.reconfigure = func() error {
		return compute.Configure(context.Background(), settings, &compute.Deps{Store: h.store, Log: slog.New(slog.NewTextHandler(h.logs, nil))})
	}
	cfg := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
	  "mode": "Replica", "cluster": {"roles": [], "databases": []}}}`
	if err := os.WriteFile(paths.AppliedConfigFile(dir), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h.setPromotion(state.Running, spec.ModeTypeReplica, nil)

	pc, err := pgx.Connect(context.Background(), primary.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	flush := func() spec.Lsn {
		var s string
		if err := pc.QueryRow(context.Background(), "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
			t.Fatal(err)
		}
		l, err := spec.ParseLsn(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if _, err := pc.Exec(context.Background(), "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	want := flush() + 128<<10
	form := url.Values{"safekeepers": {"sk-0:5454"}, "wal_flush_lsn": {want.String()}}.Encode()
	tok := withToken(h.computeToken())
	first := h.async(context.Background(), "POST", "/promote", form, formBody(), tok)
	wake, cancel := h.waker.Subscribe()
	defer cancel()
	if _, err := h.store.Wait(context.Background(), wake, 20*time.Millisecond, func(r state.Record) bool {
		return r.Promotion != nil && r.Promotion.Phase == promotestate.PhasePromoting
	}); err != nil {
		t.Fatal(err)
	}
	joined := []<-chan *httptest.ResponseRecorder{
		h.async(context.Background(), "POST", "/promote", `{"safekeepers":"sk-0:5454","wal_flush_lsn":"`+want.String()+`"}`, jsonBody(), tok),
		h.async(context.Background(), "POST", "/promote", "safekeepers=other&wal_flush_lsn=0/1", formBody(), tok),
	}
	for flush() < want {
		if _, err := pc.Exec(context.Background(), "INSERT INTO t SELECT generate_series(1, 2000)"); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range append([]<-chan *httptest.ResponseRecorder{first}, joined...) {
		w := <-ch
		if w.Code != http.StatusOK {
			t.Fatalf("call %d: %d %s\n%s", i, w.Code, w.Body, h.logs)
		}
		if st := promoteState(t, w, w.Body.Bytes()); st.Status != promotestate.Completed {
			t.Errorf("call %d: %+v", i, st)
		}
	}
	h.units.mu.Lock()
	n := h.units.reconfigures
	h.units.mu.Unlock()
	if n != 1 {
		t.Errorf("%d reconfigurations, want 1", n)
	}
	rec, _ := h.store.Load()
	if rec.Status != state.Running || rec.Mode != spec.ModeTypePrimary || rec.Promotion.Phase != promotestate.PhaseCompleted {
		t.Errorf("record %s %s %+v", rec.Status, rec.Mode, rec.Promotion)
	}
	sc, err := pgx.Connect(context.Background(), standby.Connstr())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(context.Background())
	if _, err := sc.Exec(context.Background(), "INSERT INTO t VALUES (0)"); err != nil {
		t.Errorf("the promoted standby takes no writes: %v", err)
	}
}
