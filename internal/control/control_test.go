package control

import (
	"bytes"
	"context"
	"errors"
	"go/parser"
	"go/token"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const (
	testTenant   = "c9269c359e9a199fad1ea0981246a78f"
	testTimeline = "ece7de74d4b8cbe5433a68ce4d1b97b4"
	testLSN      = "0/16B5A50"
)

// fakeUnits drives the store the way systemd and our unit hooks do.
type fakeUnits struct {
	store *state.Store
	// hook, when set, runs as the Postgres unit's stop hook (inside the stop job).
	hook      func() error
	stopErr   error
	cancelErr error
	// reconfigure, when set, runs (in the background) as the configure unit does on a
	// restart.
	reconfigure    func() error
	reconfigureErr error
	pgActive       bool
	// states is what States reports (Reconcile); statesErr fails it.
	states    UnitStates
	statesErr error

	mu             sync.Mutex
	reconfigures   int
	stops          []bool
	cancelStartups int
	stateQueries   int
}

func (u *fakeUnits) StopPostgres(ctx context.Context, immediate bool) error {
	u.mu.Lock()
	u.stops = append(u.stops, immediate)
	u.mu.Unlock()
	if u.stopErr != nil {
		return u.stopErr
	}
	if u.hook != nil {
		return u.hook()
	}
	return nil
}

func (u *fakeUnits) CancelStartup(ctx context.Context) error {
	u.mu.Lock()
	u.cancelStartups++
	u.mu.Unlock()
	return u.cancelErr
}

func (u *fakeUnits) Reconfigure(ctx context.Context) error {
	u.mu.Lock()
	u.reconfigures++
	u.mu.Unlock()
	if u.reconfigureErr != nil {
		return u.reconfigureErr
	}
	if u.reconfigure != nil {
		go u.reconfigure()
	}
	return nil
}

func (u *fakeUnits) PostgresActive(ctx context.Context) (bool, error) { return u.pgActive, nil }

func (u *fakeUnits) States(ctx context.Context) (UnitStates, error) {
	u.mu.Lock()
	u.stateQueries++
	u.mu.Unlock()
	return u.states, u.statesErr
}

type pendingSink struct {
	mu    sync.Mutex
	calls [][]byte
	err   error
}

func (p *pendingSink) write(raw []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, append([]byte(nil), raw...))
	return p.err
}

func (p *pendingSink) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

type rig struct {
	t       *testing.T
	store   *state.Store
	waker   *statetest.Waker
	units   *fakeUnits
	pending *pendingSink
	ctl     *Controller
	logs    *bytes.Buffer
}

func newRig(t *testing.T, opts ...func(*Deps)) *rig {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, store: store, waker: &statetest.Waker{}, units: &fakeUnits{store: store}, pending: &pendingSink{}, logs: &bytes.Buffer{}}
	store.OnChange = func(state.Record) { r.waker.Notify() }
	cfg := Deps{Store: store, Waker: r.waker, Units: r.units, WritePendingConfig: r.pending.write,
		Logger: slog.New(slog.NewTextHandler(r.logs, nil)), Recheck: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	r.ctl = New(cfg)
	t.Cleanup(r.ctl.WaitRefreshes) // before the state directory goes
	return r
}

func (r *rig) set(st state.Status, fn func(*state.Record)) {
	r.t.Helper()
	statetest.MustSet(r.t, r.store, st, fn)
}

func (r *rig) waitStatus(st state.Status) {
	r.t.Helper()
	wake, cancel := r.waker.Subscribe()
	defer cancel()
	if _, err := r.store.Wait(context.Background(), wake, 50*time.Millisecond, func(rec state.Record) bool { return rec.Status == st }); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) status() state.Status {
	r.t.Helper()
	rec, err := r.ctl.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	return rec.Status
}

func parsed(t *testing.T) *spec.Parsed {
	t.Helper()
	tenant, timeline := testTenant, testTimeline
	return &spec.Parsed{Storage: spec.StorageNeon, TenantID: tenant, TimelineID: timeline}
}

type result struct {
	rec state.Record
	err error
}

func (r *rig) configureAsync(ctx context.Context, raw string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		rec, err := r.ctl.Configure(ctx, []byte(raw), parsed(r.t))
		ch <- result{rec, err}
	}()
	return ch
}

func TestLoadBeforeAnyRecord(t *testing.T) {
	start := time.Date(2025, 7, 17, 12, 0, 0, 0, time.UTC)
	r := newRig(t, func(c *Deps) { c.Now = func() time.Time { return start } })
	rec, err := r.ctl.Load()
	if err != nil || rec.Status != state.Empty || !rec.StartTime.Equal(start) {
		t.Fatalf("Load = %+v, %v", rec, err)
	}
}

// The first config: stored before the status leaves empty, then the call blocks until
// compute-init has brought the compute up.
func TestConfigureFirst(t *testing.T) {
	r := newRig(t)
	done := r.configureAsync(context.Background(), "config-1")
	r.waitStatus(state.ConfigurationPending)
	if r.pending.count() != 1 || string(r.pending.calls[0]) != "config-1" {
		t.Fatalf("pending config: %q", r.pending.calls)
	}
	rec, _ := r.store.Load()
	if *rec.Tenant != testTenant || *rec.Timeline != testTimeline {
		t.Fatalf("tenant/timeline not recorded: %+v", rec)
	}
	r.set(state.Init, nil)
	select {
	case res := <-done:
		t.Fatalf("returned before running: %+v", res)
	case <-time.After(50 * time.Millisecond):
	}
	r.set(state.Running, nil)
	res := <-done
	if res.err != nil || res.rec.Status != state.Running {
		t.Fatalf("Configure = %+v", res)
	}
	if r.units.reconfigures != 0 {
		t.Error("a first configuration re-ran the configure unit")
	}
}

func TestConfigureReconfiguresRunning(t *testing.T) {
	r := newRig(t)
	r.set(state.Running, nil)
	r.units.reconfigure = func() error {
		_, err := statetest.Set(r.store, state.Configuration, nil)
		if err == nil {
			_, err = statetest.Set(r.store, state.Running, nil)
		}
		return err
	}
	res := <-r.configureAsync(context.Background(), "config-2")
	if res.err != nil || res.rec.Status != state.Running || r.units.reconfigures != 1 {
		t.Fatalf("Configure = %+v, %d reconfigures", res, r.units.reconfigures)
	}
}

func TestConfigureFailures(t *testing.T) {
	t.Run("compute failed", func(t *testing.T) {
		r := newRig(t)
		done := r.configureAsync(context.Background(), "c")
		r.waitStatus(state.ConfigurationPending)
		r.set(state.Failed, func(rec *state.Record) { rec.SetError("basebackup: refused") })
		res := <-done
		var f *FailedError
		if !errors.As(res.err, &f) || f.Msg != "basebackup: refused" {
			t.Fatalf("Configure error = %v, want FailedError with the record's error", res.err)
		}
	})
	t.Run("no error recorded", func(t *testing.T) {
		r := newRig(t)
		done := r.configureAsync(context.Background(), "c")
		r.waitStatus(state.ConfigurationPending)
		r.set(state.Failed, nil)
		var f *FailedError
		if res := <-done; !errors.As(res.err, &f) || f.Msg != "unknown error" {
			t.Fatalf("Configure error = %v", res.err)
		}
	})
	t.Run("unit cannot start", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Running, nil)
		r.units.reconfigureErr = errors.New("job failed")
		res := <-r.configureAsync(context.Background(), "c")
		var f *FailedError
		if !errors.As(res.err, &f) || f.Msg != "reconfigure: job failed" {
			t.Fatalf("Configure error = %v", res.err)
		}
		if rec, _ := r.store.Load(); rec.Status != state.Failed || *rec.Error != "reconfigure: job failed" {
			t.Fatalf("record %+v", rec)
		}
	})
	t.Run("pending config not stored", func(t *testing.T) {
		r := newRig(t)
		r.pending.err = errors.New("disk full")
		_, err := r.ctl.Configure(context.Background(), []byte("c"), parsed(t))
		var p *PendingConfigError
		if !errors.As(err, &p) || err.Error() != "store pending config: disk full" || r.status() != state.Empty {
			t.Fatalf("Configure error = %v, status %s", err, r.status())
		}
	})
	t.Run("wrong status", func(t *testing.T) {
		for _, st := range []state.Status{state.Init, state.ConfigurationPending, state.Failed, state.Terminated} {
			r := newRig(t)
			r.set(st, nil)
			_, err := r.ctl.Configure(context.Background(), []byte("c"), parsed(t))
			var w *state.WrongStatusError
			if !errors.As(err, &w) || w.Status != st || r.pending.count() != 0 {
				t.Errorf("%s: Configure error = %v", st, err)
			}
		}
	})
	t.Run("failed with postgres running recovers", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Failed, nil)
		r.units.pgActive = true
		r.units.reconfigure = func() error { _, err := statetest.Set(r.store, state.Running, nil); return err }
		if res := <-r.configureAsync(context.Background(), "c"); res.err != nil || res.rec.Status != state.Running {
			t.Fatalf("Configure = %+v", res)
		}
	})
	t.Run("caller goes away", func(t *testing.T) {
		r := newRig(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := r.configureAsync(ctx, "c")
		r.waitStatus(state.ConfigurationPending)
		cancel()
		if res := <-done; !errors.Is(res.err, context.Canceled) || r.status() != state.ConfigurationPending {
			t.Fatalf("Configure error = %v, status %s", res.err, r.status())
		}
	})
}

func TestTerminate(t *testing.T) {
	lsn := testLSN
	neonHook := func(r *rig) func() error {
		return func() error {
			_, _, err := r.store.CompleteTermination(state.ActorStopHook, &lsn)
			return err
		}
	}
	t.Run("neon primary waits for the stop hook's LSN", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "neon", "primary" })
		r.units.hook = neonHook(r)
		term, err := r.ctl.Terminate(context.Background(), true)
		if err != nil || term.Already || term.LSN == nil || *term.LSN != testLSN || len(r.units.stops) != 1 || !r.units.stops[0] {
			t.Fatalf("Terminate = %+v, %v; stops %v", term, err, r.units.stops)
		}
		// Again: already terminated, with the same LSN.
		term, err = r.ctl.Terminate(context.Background(), false)
		if err != nil || !term.Already || *term.LSN != testLSN || len(r.units.stops) != 1 {
			t.Fatalf("second Terminate = %+v, %v", term, err)
		}
	})
	t.Run("standalone completes itself", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "standalone", "primary" })
		term, err := r.ctl.Terminate(context.Background(), false)
		if err != nil || term.LSN != nil || r.status() != state.Terminated {
			t.Fatalf("Terminate = %+v, %v, status %s", term, err, r.status())
		}
	})
	t.Run("empty cancels the startup", func(t *testing.T) {
		r := newRig(t)
		term, err := r.ctl.Terminate(context.Background(), false)
		if err != nil || term.LSN != nil || r.units.cancelStartups != 1 || r.status() != state.Terminated {
			t.Fatalf("Terminate = %+v, %v", term, err)
		}
	})
	t.Run("unit failures", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Running, nil)
		r.units.stopErr = errors.New("job failed")
		_, err := r.ctl.Terminate(context.Background(), false)
		var f *FailedError
		if !errors.As(err, &f) || f.Msg != "terminate: stop postgres: job failed" {
			t.Fatalf("Terminate error = %v", err)
		}
		if rec, _ := r.store.Load(); rec.Status != state.Failed || *rec.Error != f.Msg {
			t.Fatalf("record %+v", rec)
		}
		r = newRig(t)
		r.units.cancelErr = errors.New("no such unit")
		if _, err := r.ctl.Terminate(context.Background(), false); !errors.As(err, &f) || f.Msg != "terminate: cancel startup: no such unit" || r.status() != state.Failed {
			t.Fatalf("Terminate error = %v, status %s", err, r.status())
		}
	})
	t.Run("final sync fails", func(t *testing.T) {
		r := newRig(t)
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "neon", "primary" })
		r.units.hook = func() error {
			_, _, err := r.store.Fail(state.ActorStopHook, "sync safekeepers: timeout", state.TerminationPendingFast)
			return err
		}
		var f *FailedError
		if _, err := r.ctl.Terminate(context.Background(), false); !errors.As(err, &f) || f.Msg != "sync safekeepers: timeout" {
			t.Fatalf("Terminate error = %v", err)
		}
	})
	t.Run("wrong status", func(t *testing.T) {
		for _, st := range []state.Status{state.Init, state.ConfigurationPending, state.Failed, state.TerminationPendingFast} {
			r := newRig(t)
			r.set(st, nil)
			var w *state.WrongStatusError
			if _, err := r.ctl.Terminate(context.Background(), false); !errors.As(err, &w) || w.Status != st {
				t.Errorf("%s: Terminate error = %v", st, err)
			}
			if len(r.units.stops)+r.units.cancelStartups != 0 {
				t.Errorf("%s: units touched", st)
			}
		}
	})
}

// Operations log with the logger the caller put in the context.
func TestWithLogger(t *testing.T) {
	r := newRig(t)
	var buf bytes.Buffer
	ctx := WithLogger(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)).With("request_id", "req-7"))
	if _, err := r.ctl.Terminate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("request_id=req-7")) || !bytes.Contains(buf.Bytes(), []byte("terminating")) {
		t.Fatalf("log:\n%s", buf.String())
	}
	if r.logs.Len() != 0 {
		t.Fatalf("the controller's own logger was used:\n%s", r.logs.String())
	}
}

func TestErrorTexts(t *testing.T) {
	if got := (&StateError{Op: "wait for state", Err: errors.New("boom")}).Error(); got != "wait for state: boom" {
		t.Errorf("StateError = %q", got)
	}
	if err := stateError(errors.New("disk")); err.Error() != "update state: disk" {
		t.Errorf("stateError = %v", err)
	}
	w := &state.WrongStatusError{Status: state.Init}
	if err := stateError(w); err != w {
		t.Errorf("stateError wrapped a WrongStatusError: %v", err)
	}
}

// The package stays free of HTTP: internal/api does the mapping.
func TestNoHTTPImport(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if p := strings.Trim(imp.Path.Value, `"`); strings.HasPrefix(p, "net/http") {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
}

// A reconfiguration whose wait for the unit fails records failed, unless the caller is
// being stopped (the TLS watcher at shutdown): the step goes on and records its outcome.
func TestReconfigureUnlessStopping(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stopping bool
		want     state.Status
	}{
		{"running caller", false, state.Failed},
		{"caller stopping", true, state.ConfigurationPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.units.reconfigureErr = errors.New("connection closed")
			r.set(state.ConfigurationPending, nil)
			stopping := make(chan struct{})
			if tc.stopping {
				close(stopping)
			}
			if msg := r.ctl.reconfigureUnless(context.Background(), stopping); !strings.Contains(msg, "connection closed") {
				t.Errorf("message %q", msg)
			}
			if got := r.status(); got != tc.want {
				t.Errorf("status %s, want %s", got, tc.want)
			}
		})
	}
}

// companionsRec records StopCompanions, and whether Postgres was still running then.
type companionsRec struct {
	units *fakeUnits
	err   error
	calls int
	// stopsBefore is how many Postgres stops came before the call.
	stopsBefore int
}

func (c *companionsRec) StopCompanions(context.Context) error {
	c.units.mu.Lock()
	c.stopsBefore = len(c.units.stops)
	c.units.mu.Unlock()
	c.calls++
	return c.err
}

func TestTerminateStopsCompanions(t *testing.T) {
	for _, fail := range []bool{false, true} {
		var comp *companionsRec
		r := newRig(t, func(d *Deps) {
			comp = &companionsRec{units: d.Units.(*fakeUnits)}
			if fail {
				comp.err = errors.New("pgbouncer.service: access denied")
			}
			d.Companions = comp
		})
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "standalone", "primary" })
		if _, err := r.ctl.Terminate(context.Background(), false); err != nil {
			t.Fatalf("fail=%v: Terminate = %v", fail, err)
		}
		if comp.calls != 1 || comp.stopsBefore != 0 || len(r.units.stops) != 1 || r.status() != state.Terminated {
			t.Errorf("fail=%v: companion stops %d (after %d postgres stops), postgres stops %d, status %s", fail, comp.calls, comp.stopsBefore, len(r.units.stops), r.status())
		}
		if fail && !strings.Contains(r.logs.String(), "pgbouncer.service: access denied") {
			t.Errorf("the failure was not logged:\n%s", r.logs)
		}
	}
}
