package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// fakeCplane is a control plane that answers GET .../spec with the config it holds
// (status 200), or with code when it is set.
type fakeCplane struct {
	srv  *httptest.Server
	mu   sync.Mutex
	body string
	code int
	hits int
}

func newFakeCplane(t *testing.T) *fakeCplane {
	c := &fakeCplane{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.hits++
		if r.URL.Path != "/compute/api/v2/computes/compute-1/spec" || r.Header.Get("Authorization") != "Bearer cp-token" {
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		if c.code != 0 {
			w.WriteHeader(c.code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(c.body))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCplane) set(body string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.body, c.code = body, code
}

func (c *fakeCplane) fetch(ctx context.Context) (*spec.ComputeConfig, error) {
	return controlplane.FetchConfig(ctx, controlplane.NewClient(5*time.Second), c.srv.URL, "compute-1", "cp-token")
}

// neonConfig is a neon-mode config whose pageserver is ps (a libpq URL).
func neonConfig(ps string) string {
	return `{"status": "attached", "compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
	  "tenant_id": "` + testTenant + `", "timeline_id": "` + testTimeline + `", "mode": "Replica",
	  "pageserver_connection_info": {"shard_count": 0, "stripe_size": null, "shards": {"0000":
	    {"pageservers": [{"id": 1, "libpq_url": "` + ps + `", "grpc_url": null}]}}},
	  "cluster": {"roles": [], "databases": []}}}`
}

// The whole refresh against a control plane over HTTP: an unchanged spec ends it, a
// moved pageserver is applied by the configure step (here: its stand-in), an unreachable
// control plane leaves the compute pending, and one without a spec fails it.
func TestRefreshConfiguration(t *testing.T) {
	cp := newFakeCplane(t)
	applied := neonConfig("postgresql://ps-old:6400")
	var appliedMu sync.Mutex
	r := newRig(t, func(d *Deps) {
		d.FetchConfig = cp.fetch
		d.ReadAppliedConfig = func() ([]byte, error) {
			appliedMu.Lock()
			defer appliedMu.Unlock()
			return []byte(applied), nil
		}
	})
	// The configure step's part: apply the pending config and go back to running.
	r.units.reconfigure = func() error {
		_, err := r.store.MarkRunning(nil)
		return err
	}
	// Refreshes are 5 s apart: let the test's clock run ahead instead of waiting.
	var clockMu sync.Mutex
	now := time.Now()
	r.ctl.cfg.Now = func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(RefreshInterval)
		return now
	}
	refresh := func(want state.Status) {
		t.Helper()
		if err := r.ctl.RefreshConfiguration(context.Background()); err != nil {
			t.Fatalf("RefreshConfiguration: %v", err)
		}
		r.waitIdle(t)
		r.waitStatusWithin(t, want)
	}

	r.set(state.Running, nil)
	cp.set(neonConfig("postgresql://ps-old:6400"), 0)
	refresh(state.Running)
	if r.pending.count() != 0 || r.units.reconfigures != 0 {
		t.Fatalf("an unchanged spec was applied: %d pending, %d reconfigures", r.pending.count(), r.units.reconfigures)
	}

	cp.set(neonConfig("postgresql://ps-new:6400"), 0)
	refresh(state.Running)
	if r.pending.count() != 1 || r.units.reconfigures != 1 || !strings.Contains(string(r.pending.calls[0]), "ps-new") {
		t.Fatalf("a moved pageserver: pending %q, %d reconfigures", r.pending.calls, r.units.reconfigures)
	}

	cp.set("", http.StatusBadGateway)
	refresh(state.RefreshConfigurationPending)
	rec, _ := r.store.Load()
	if rec.Error == nil || !strings.Contains(*rec.Error, "refresh configuration: fetch config") {
		t.Fatalf("unreachable control plane: %+v", rec)
	}
	// Pending, asked again: the next refresh works.
	cp.set(neonConfig("postgresql://ps-old:6400"), 0)
	refresh(state.Running)

	cp.set(`{"status": "empty", "spec": null, "compute_ctl_config": {"jwks": {"keys": []}}}`, 0)
	refresh(state.Failed)
	rec, _ = r.store.Load()
	if rec.Error == nil || !strings.Contains(*rec.Error, "no longer attached") {
		t.Fatalf("no spec: %+v", rec)
	}
}

// A spec the control plane sends that does not validate leaves the compute pending, with
// the reason; the applied config is untouched.
func TestRefreshConfigurationBadSpec(t *testing.T) {
	cp := newFakeCplane(t)
	r := newRig(t, func(d *Deps) {
		d.FetchConfig = cp.fetch
		d.ReadAppliedConfig = func() ([]byte, error) { return []byte(neonConfig("postgresql://ps:1")), nil }
	})
	r.set(state.Running, nil)
	var m map[string]any
	if err := json.Unmarshal([]byte(neonConfig("postgresql://ps:1")), &m); err != nil {
		t.Fatal(err)
	}
	m["spec"].(map[string]any)["pageserver_connection_info"].(map[string]any)["prefer_protocol"] = "grpc"
	b, _ := json.Marshal(m)
	cp.set(string(b), 0)
	if err := r.ctl.RefreshConfiguration(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.waitIdle(t)
	r.waitStatusWithin(t, state.RefreshConfigurationPending)
	rec, _ := r.store.Load()
	if rec.Error == nil || !strings.Contains(*rec.Error, "no grpc_url for shard 0000") || r.pending.count() != 0 {
		t.Fatalf("bad spec: %+v, %d pending", rec, r.pending.count())
	}
}

// A refresh asked from failed that finds the same pageservers goes back to failed with
// the old error (it used to report running, though nothing was repaired).
func TestRefreshFromFailedUnchanged(t *testing.T) {
	cp := newFakeCplane(t)
	r := newRig(t, func(d *Deps) {
		d.FetchConfig = cp.fetch
		d.ReadAppliedConfig = func() ([]byte, error) { return []byte(neonConfig("postgresql://ps:1")), nil }
	})
	r.units.pgActive = true
	cp.set(neonConfig("postgresql://ps:1"), 0)
	r.set(state.Failed, func(rec *state.Record) { rec.SetError("apply the catalog: boom") })
	if err := r.ctl.RefreshConfiguration(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.waitIdle(t)
	rec, _ := r.store.Load()
	if rec.Status != state.Failed || rec.Error == nil || *rec.Error != "apply the catalog: boom" || r.units.reconfigures != 0 {
		t.Fatalf("after the refresh: %+v, %d reconfigures", rec, r.units.reconfigures)
	}
}

// Which statuses take a request, and compute_ctl's refusal for the others.
func TestRefreshConfigurationStatuses(t *testing.T) {
	for _, tc := range []struct {
		from     state.Status
		pgActive bool
		want     state.Status
		refused  bool
	}{
		{state.Init, false, state.Init, false},
		{state.Empty, false, state.Empty, true},
		{state.ConfigurationPending, false, state.ConfigurationPending, true},
		{state.TerminationPendingFast, false, state.TerminationPendingFast, true},
		{state.Failed, false, state.Failed, true},
		{state.Failed, true, state.RefreshConfigurationPending, false},
		{state.RefreshConfigurationPending, false, state.RefreshConfigurationPending, false},
	} {
		t.Run(fmt.Sprintf("%s pg=%v", tc.from, tc.pgActive), func(t *testing.T) {
			// A control plane that cannot be reached: a refresh that starts goes back
			// to pending at once.
			r := newRig(t, func(d *Deps) {
				d.FetchConfig = func(context.Context) (*spec.ComputeConfig, error) {
					return nil, errors.New("control plane down")
				}
			})
			r.units.pgActive = tc.pgActive
			r.set(tc.from, nil)
			err := r.ctl.RefreshConfiguration(context.Background())
			var refused *state.RefreshRefusedError
			if tc.refused != errors.As(err, &refused) {
				t.Fatalf("error %v, refused want %v", err, tc.refused)
			}
			if tc.refused && err.Error() != "Cannot refresh compute configuration in state "+string(tc.from) {
				t.Errorf("text %q", err)
			}
			r.waitIdle(t)
			if got := r.status(); got != tc.want {
				t.Fatalf("status %s, want %s", got, tc.want)
			}
		})
	}
}

// Without a control plane a refresh cannot start: the call fails and the status stays
// (it used to be left refresh_configuration_pending for good, refusing /configure).
func TestRefreshConfigurationNoControlPlane(t *testing.T) {
	for _, from := range []state.Status{state.Running, state.Init} {
		r := newRig(t)
		r.units.pgActive = true
		r.set(from, nil)
		if err := r.ctl.RefreshConfiguration(context.Background()); !errors.Is(err, ErrNoControlPlane) {
			t.Fatalf("from %s: error %v, want ErrNoControlPlane", from, err)
		}
		r.waitIdle(t)
		if got := r.status(); got != from {
			t.Fatalf("status %s, want %s", got, from)
		}
	}
}

// A pushed /configure takes over from a pending refresh: the config is stored, the
// configure step re-run, and the compute is running again.
func TestConfigureFromRefreshPending(t *testing.T) {
	r := newRig(t)
	r.set(state.RefreshConfigurationPending, func(rec *state.Record) { rec.Storage, rec.Mode = "neon", "replica" })
	r.units.reconfigure = func() error {
		if _, err := r.store.BeginReconfiguration(); err != nil {
			return err
		}
		_, err := r.store.MarkRunning(nil)
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := r.ctl.Configure(ctx, []byte("config-2"), parsed(t))
	if err != nil || rec.Status != state.Running {
		t.Fatalf("Configure: %+v, %v", rec, err)
	}
	if r.pending.count() != 1 || r.units.reconfigures != 1 {
		t.Fatalf("pending %q, %d reconfigures", r.pending.calls, r.units.reconfigures)
	}
}

// A compute pending a refresh is terminated like a running one: Postgres stopped, then
// terminated (it used to wait for ever, with nothing stopping Postgres).
func TestTerminateFromRefreshPending(t *testing.T) {
	r := newRig(t)
	r.set(state.RefreshConfigurationPending, func(rec *state.Record) { rec.Storage, rec.Mode = "standalone", "primary" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	term, err := r.ctl.Terminate(ctx, false)
	if err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	if len(r.units.stops) != 1 || r.status() != state.Terminated || term.Already {
		t.Fatalf("stops %v, status %s, %+v", r.units.stops, r.status(), term)
	}
}

// waitIdle waits until no refresh runs in the background.
func (r *rig) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.ctl.refreshMu.Lock()
		busy := r.ctl.refresh.busy
		r.ctl.refreshMu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresh did not end in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStatusWithin waits for st, at most 10 s, and names what it found instead.
func (r *rig) waitStatusWithin(t *testing.T, st state.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wake, unsub := r.waker.Subscribe()
	defer unsub()
	if rec, err := r.store.Wait(ctx, wake, 50*time.Millisecond, func(rec state.Record) bool { return rec.Status == st }); err != nil {
		t.Fatalf("status %s (error %v), want %s\n%s", rec.Status, rec.Error, st, r.logs)
	}
}

// A refresh is one of the server's tasks: shutdown cancels the fetch it waits on, which
// leaves the compute pending, and waits for it.
func TestRefreshRunsAsServerTask(t *testing.T) {
	g := newTaskGroup()
	entered := make(chan struct{})
	r := newRig(t, func(d *Deps) {
		d.Tasks = g
		d.FetchConfig = func(ctx context.Context) (*spec.ComputeConfig, error) {
			close(entered)
			<-ctx.Done()
			return nil, ctx.Err()
		}
	})
	r.set(state.Running, nil)
	if err := r.ctl.RefreshConfiguration(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-entered
	if g.n.Load() != 1 {
		t.Fatalf("%d tasks, want the refresh", g.n.Load())
	}
	g.shutdown()
	rec, _ := r.store.Load()
	if rec.Status != state.RefreshConfigurationPending || rec.Error == nil || !strings.Contains(*rec.Error, "context canceled") {
		t.Fatalf("after shutdown: %+v", rec)
	}
}

// A refresh_configuration left by a compute-api that ended mid-refresh goes back to
// pending (the next request tries again), unless the configure step applies its spec.
func TestReconcileInterruptedRefresh(t *testing.T) {
	for _, tc := range []struct {
		configure string
		want      state.Status
		action    ReconcileAction
	}{
		{"inactive", state.RefreshConfigurationPending, ReconcileRefreshPending},
		{"activating", state.RefreshConfiguration, ReconcileNone},
	} {
		r := newRig(t)
		r.set(state.RefreshConfiguration, nil)
		r.units.states = UnitStates{Init: "active", Postgres: "active", Configure: tc.configure}
		act, err := r.ctl.Reconcile(context.Background())
		if err != nil || act != tc.action || r.status() != tc.want {
			t.Fatalf("configure %s: %s, %v, status %s; want %s, %s", tc.configure, act, err, r.status(), tc.action, tc.want)
		}
	}
}
