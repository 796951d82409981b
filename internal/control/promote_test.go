package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// untouchable is a Promoter for checks that must fail before Postgres is touched: it
// counts calls and fails them.
type untouchable struct{ calls int }

func (u *untouchable) Promote(context.Context, promotestate.Request, promote.Run) (promote.Result, error) {
	u.calls++
	return promote.Result{}, errors.New("postgres touched")
}

func (u *untouchable) ResetSafekeepers(context.Context) error {
	u.calls++
	return errors.New("postgres touched")
}

const neonReplicaConfig = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "mode": "Replica", "pageserver_connstring": "postgresql://ps:6400", "tenant_id": "` + testTenant + `",
  "timeline_id": "` + testTimeline + `", "safekeepers_generation": 3, "cluster": {"roles": [], "databases": [], "settings": [
  {"name": "max_connections", "value": "100", "vartype": "integer"}]}}}`

func TestPromoteChecksBeforePostgres(t *testing.T) {
	req := promotestate.Request{Safekeepers: "sk-0:5454", WALFlushLSN: 1}
	for _, tc := range []struct {
		name    string
		storage spec.StorageMode
		lfc     *lfcstate.States
		req     promotestate.Request
		want    string
	}{
		{"no prewarm asked", spec.StorageNeon, nil, req, "prewarm not requested or pending"},
		{"prewarm pending", spec.StorageNeon, &lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmPrewarming}}, req, "prewarm not requested or pending"},
		{"no safekeepers", spec.StorageNeon, &lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}},
			promotestate.Request{WALFlushLSN: 1}, "the config as a primary: invalid spec: "},
		{"empty safekeeper entry", spec.StorageNeon, &lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted}},
			promotestate.Request{Safekeepers: "a:1,,b:1", WALFlushLSN: 1}, "the config as a primary: invalid spec: "},
		{"bad generation", spec.StorageNeon, &lfcstate.States{Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "x"}},
			promotestate.Request{Safekeepers: "g#x:a:1", WALFlushLSN: 1}, `invalid safekeepers "g#x:a:1": want g#<generation>:<list>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &untouchable{}
			r := newRig(t, func(d *Deps) {
				d.Promoter = u
				d.ReadAppliedConfig = func() ([]byte, error) { return []byte(neonReplicaConfig), nil }
			})
			r.set(state.Running, func(rec *state.Record) {
				rec.Mode, rec.Storage, rec.LFC = spec.ModeTypeReplica, tc.storage, tc.lfc
			})
			st, err := r.ctl.Promote(context.Background(), tc.req)
			if err != nil || st.Status != promotestate.Failed || !strings.HasPrefix(st.Error, tc.want) {
				t.Fatalf("%+v, %v; want failed %q", st, err, tc.want)
			}
			if u.calls != 0 {
				t.Errorf("postgres touched %d times", u.calls)
			}
			rec, _ := r.store.Load()
			if rec.Promotion == nil || rec.Promotion.Phase != promotestate.PhaseFailed || rec.Promotion.Error != st.Error {
				t.Errorf("record: %+v", rec.Promotion)
			}
		})
	}
}

func TestPromoteWrongStatusBeginsNothing(t *testing.T) {
	r := newRig(t, func(d *Deps) { d.Promoter = &untouchable{} })
	r.set(state.Configuration, func(rec *state.Record) { rec.Mode = spec.ModeTypeReplica })
	_, err := r.ctl.Promote(context.Background(), promotestate.Request{})
	var wrong *state.WrongStatusError
	if !errors.As(err, &wrong) || wrong.Status != state.Configuration {
		t.Fatalf("err %v", err)
	}
	if rec, _ := r.store.Load(); rec.Promotion != nil {
		t.Errorf("promotion %+v", rec.Promotion)
	}
}

// A promotion left promoting by a compute-api process that is gone is taken over by the
// next call, and a call after a failed one tries again; both tell Postgres that an
// earlier attempt may have promoted it already.
func TestPromoteAgain(t *testing.T) {
	for _, ph := range []promotestate.Phase{promotestate.PhasePromoting, promotestate.PhaseFailed, ""} {
		rp := &resumeRecorder{}
		r := newRig(t, func(d *Deps) {
			d.Promoter = rp
			d.ReadAppliedConfig = func() ([]byte, error) { return []byte(neonReplicaConfig), nil }
		})
		r.set(state.Running, func(rec *state.Record) {
			rec.Mode, rec.Storage = spec.ModeTypeReplica, spec.StorageStandalone
			if ph != "" {
				rec.Promotion = &promotestate.Promotion{Phase: ph}
			}
		})
		st, _ := r.ctl.Promote(context.Background(), promotestate.Request{Safekeepers: "a:1", WALFlushLSN: 1})
		if len(rp.runs) != 1 || rp.runs[0].Resume != (ph != "") || rp.runs[0].Neon || st.Status != promotestate.Failed || st.Error != "stop here" {
			t.Errorf("%q: runs %+v, outcome %+v", ph, rp.runs, st)
		}
	}
}

// resumeRecorder records how Postgres was asked to promote and fails the promotion
// there (the rest of the path is TestPromoteRealStandby's).
type resumeRecorder struct{ runs []promote.Run }

func (p *resumeRecorder) Promote(_ context.Context, _ promotestate.Request, run promote.Run) (promote.Result, error) {
	p.runs = append(p.runs, run)
	return promote.Result{}, errors.New("stop here")
}

func (p *resumeRecorder) ResetSafekeepers(context.Context) error { return errors.New("not expected") }

func TestPromotedConfig(t *testing.T) {
	for _, tc := range []struct {
		sks     string
		list    []string
		gen     string
		guc     string
		wantErr string
	}{
		{sks: "sk-0:5454,sk-1:5454", list: []string{"sk-0:5454", "sk-1:5454"}, guc: "'sk-0:5454,sk-1:5454'"},
		{sks: "g#7:sk-0:5454,sk-1:5454", list: []string{"sk-0:5454", "sk-1:5454"}, gen: "7", guc: "'g#7:sk-0:5454,sk-1:5454'"},
		{sks: "", guc: ""},
		{sks: "g#:a", wantErr: `invalid safekeepers "g#:a"`},
		{sks: "g#99999999999:a", wantErr: `invalid safekeepers`},
	} {
		raw, err := PromotedConfig([]byte(neonReplicaConfig), tc.sks)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.sks, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.sks, err)
		}
		sp := promotedSpec(t, raw)
		if string(sp["mode"]) != `"Primary"` || string(sp["tenant_id"]) != `"`+testTenant+`"` || sp["cluster"] == nil {
			t.Errorf("%q: spec %s", tc.sks, raw)
		}
		var list []string
		if sp["safekeeper_connstrings"] != nil {
			if err := json.Unmarshal(sp["safekeeper_connstrings"], &list); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Join(list, "|") != strings.Join(tc.list, "|") || string(sp["safekeepers_generation"]) != tc.gen {
			t.Errorf("%q: list %q generation %s", tc.sks, list, sp["safekeepers_generation"])
		}
		if tc.sks == "" {
			continue
		}
		// The neon.safekeepers line the configure step renders is the value compute_ctl set.
		l, err := spec.Load(raw)
		if err != nil {
			t.Fatalf("%q: %v", tc.sks, err)
		}
		v := strings.Join(l.ComputeSpec().SafekeeperConnstrings, ",")
		if g := l.ComputeSpec().SafekeepersGeneration; g != nil {
			v = "g#" + strings.TrimSpace(string(sp["safekeepers_generation"])) + ":" + v
		}
		if "'"+v+"'" != tc.guc {
			t.Errorf("%q: rendered %q", tc.sks, v)
		}
	}
	if _, err := PromotedConfig([]byte(`{"compute_ctl_config":{}}`), "a:1"); err == nil {
		t.Error("a config without a spec was promoted")
	}
}

// taskGroup is a Tasks like compute-api's: its work runs under a context that shutdown
// cancels, and shutdown waits for it.
type taskGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	n      atomic.Int32
}

func newTaskGroup() *taskGroup {
	g := &taskGroup{}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

func (g *taskGroup) Go(fn func(ctx context.Context)) {
	g.n.Add(1)
	g.wg.Go(func() { fn(g.ctx) })
}

func (g *taskGroup) shutdown() {
	g.cancel()
	g.wg.Wait()
}

// blockingPromoter holds Postgres's side of the promotion until its context ends.
type blockingPromoter struct{ entered chan struct{} }

func (p *blockingPromoter) Promote(ctx context.Context, _ promotestate.Request, _ promote.Run) (promote.Result, error) {
	close(p.entered)
	<-ctx.Done()
	return promote.Result{}, fmt.Errorf("waiting for the replay: %w", ctx.Err())
}

func (p *blockingPromoter) ResetSafekeepers(context.Context) error { return errors.New("not expected") }

// The promotion runs among the server's tasks: not bound to the request (a caller that
// goes away does not stop it), but cancelled and waited for at shutdown, which records
// it failed with the reason (a later POST /promote resumes it).
func TestPromotionIsAServerTask(t *testing.T) {
	g := newTaskGroup()
	bp := &blockingPromoter{entered: make(chan struct{})}
	r := newRig(t, func(d *Deps) {
		d.Promoter = bp
		d.Tasks = g
		d.ReadAppliedConfig = func() ([]byte, error) { return []byte(neonReplicaConfig), nil }
	})
	r.set(state.Running, func(rec *state.Record) { rec.Mode, rec.Storage = spec.ModeTypeReplica, spec.StorageStandalone })
	req := promotestate.Request{Safekeepers: "a:1", WALFlushLSN: 1}

	// The first caller goes away: the promotion goes on.
	gone, leave := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := r.ctl.Promote(gone, req); first <- err }()
	<-bp.entered
	leave()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that left got %v", err)
	}
	if n := g.n.Load(); n != 1 {
		t.Fatalf("%d tasks started, want the promotion", n)
	}
	if rec, _ := r.store.Load(); rec.Promotion == nil || rec.Promotion.Phase != promotestate.PhasePromoting {
		t.Fatalf("the promotion stopped with its caller: %+v", rec.Promotion)
	}
	g.shutdown() // returns only once the promotion has ended
	rec, _ := r.store.Load()
	const want = "compute-api stopped during the promotion (POST /promote again resumes it): waiting for the replay: context canceled"
	if rec.Promotion == nil || rec.Promotion.Phase != promotestate.PhaseFailed || rec.Promotion.Error != want {
		t.Fatalf("record after shutdown: %+v", rec.Promotion)
	}
}
