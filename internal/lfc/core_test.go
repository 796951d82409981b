package lfc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/computetools/compute-tools/internal/lfc"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/lfc/lfctest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakePG is the Postgres side in memory: each call advances the clock by its cost.
type fakePG struct {
	clk                          *fakeClock
	state                        []byte
	stateErr, prewarmErr, infErr error
	info                         lfcstate.Progress
	cost                         time.Duration
	block                        chan struct{} // PrewarmLocalCache waits for ctx (closed when entered)
	got                          []byte
	// onState and onPrewarm, if set, run inside LocalCacheState and PrewarmLocalCache
	// (before they answer): what happens meanwhile elsewhere.
	onState, onPrewarm func()
}

func (p *fakePG) LocalCacheState(ctx context.Context) ([]byte, error) {
	p.clk.Advance(p.cost)
	if p.onState != nil {
		p.onState()
	}
	return p.state, p.stateErr
}

func (p *fakePG) PrewarmLocalCache(ctx context.Context, state []byte) error {
	if p.onPrewarm != nil {
		p.onPrewarm()
	}
	if p.block != nil {
		close(p.block)
		<-ctx.Done()
		return errors.New("loading LFC state into postgres: " + ctx.Err().Error())
	}
	p.clk.Advance(p.cost)
	p.got = state
	return p.prewarmErr
}

// PrewarmInfo fails on a done context, as a query would.
func (p *fakePG) PrewarmInfo(ctx context.Context) (lfcstate.Progress, error) {
	if err := ctx.Err(); err != nil {
		return lfcstate.Progress{}, errors.New("querying prewarm info: " + err.Error())
	}
	return p.info, p.infErr
}

// slowStore wraps a store and advances the clock on each call.
type slowStore struct {
	lfc.Store
	clk  *fakeClock
	cost time.Duration
}

func (s slowStore) Get(ctx context.Context, ep string) ([]byte, error) {
	s.clk.Advance(s.cost)
	return s.Store.Get(ctx, ep)
}

func (s slowStore) Put(ctx context.Context, b []byte) error {
	s.clk.Advance(s.cost)
	return s.Store.Put(ctx, b)
}

func zstdOf(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

type rig struct {
	clk   *fakeClock
	store *lfctest.Storage
	pg    *fakePG
	core  *lfc.Core
	logs  *bytes.Buffer
	tb    testing.TB
}

func newRig(t *testing.T) *rig {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := lfctest.NewStorage(t)
	pg := &fakePG{clk: clk, cost: 30 * time.Millisecond}
	logs, log := logBuf()
	client := lfc.NewClient(endpointOf(s), lfc.ClientOptions{Timeout: 5 * time.Second, Logger: log})
	m := lfc.NewMachine(lfc.MachineOptions{Now: clk.Now, OffloadInterval: time.Minute})
	core := lfc.NewCore(m, slowStore{Store: client, clk: clk, cost: 70 * time.Millisecond}, pg, lfc.CoreOptions{Logger: log})
	return &rig{clk: clk, store: s, pg: pg, core: core, logs: logs}
}

func (r *rig) prewarm(t *testing.T, from string) lfcstate.PrewarmState {
	t.Helper()
	run, err := r.core.StartPrewarm(context.Background(), from)
	if err != nil {
		t.Fatalf("StartPrewarm: %v", err)
	}
	run()
	return r.core.Machine().Prewarm()
}

func (r *rig) offload(t *testing.T) lfcstate.OffloadState {
	t.Helper()
	run, err := r.core.StartOffload(context.Background())
	if err != nil {
		t.Fatalf("StartOffload: %v", err)
	}
	run()
	return r.core.Machine().Offload()
}

func TestCoreOffloadThenPrewarm(t *testing.T) {
	r := newRig(t)
	state := bytes.Repeat([]byte("lfc chunk "), 1000)
	r.pg.state = state
	got := r.offload(t)
	want := lfcstate.OffloadState{Status: lfcstate.OffloadCompleted, Timings: lfcstate.OffloadTimings{StateQueryMs: 30, CompressMs: 0, StateUploadMs: 70}}
	if got != want {
		t.Fatalf("offload %+v, want %+v", got, want)
	}
	stored, ok := r.store.Object(objPath)
	if !ok || len(stored) >= len(state) {
		t.Fatalf("stored %d bytes (%v) for a %d-byte state", len(stored), ok, len(state))
	}
	r.pg.info = lfcstate.Progress{Total: 10, Prewarmed: 9, Skipped: 1}
	pw := r.prewarm(t, "")
	wantPW := lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted, Progress: lfcstate.Progress{Total: 10, Prewarmed: 9, Skipped: 1},
		Timings: lfcstate.PrewarmTimings{StateDownloadMs: 70, UncompressMs: 0, PrewarmMs: 30}}
	if pw != wantPW {
		t.Fatalf("prewarm %+v, want %+v", pw, wantPW)
	}
	if !bytes.Equal(r.pg.got, state) {
		t.Error("Postgres did not get the state that was offloaded")
	}
	if got := r.core.Machine().Counters(); got != (lfcstate.Counters{Prewarms: 1, Offloads: 1}) {
		t.Errorf("counters %+v", got)
	}
	noToken(t, "log", r.logs.String())
	for _, want := range []string{"LFC offload completed", "state_upload_ms=70", "LFC prewarm completed", "state_download_ms=70"} {
		if !strings.Contains(r.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, r.logs)
		}
	}
}

func TestCorePrewarmFromAnotherEndpoint(t *testing.T) {
	r := newRig(t)
	r.store.Put("/"+tenant+"/"+timeline+"/ep-parent/lfc_state", zstdOf(t, []byte("parent state")))
	if st := r.prewarm(t, "ep-parent"); st.Status != lfcstate.PrewarmCompleted {
		t.Fatalf("prewarm %+v", st)
	}
	if string(r.pg.got) != "parent state" {
		t.Errorf("prewarmed %q", r.pg.got)
	}
}

func TestCorePrewarmFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*rig)
		want  lfcstate.PrewarmState
	}{
		{"404 is skipped", func(r *rig) { r.store.SetMode(lfctest.NotFound) }, lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}},
		{"no state yet is skipped", func(r *rig) {}, lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}},
		{"500", func(r *rig) { r.store.SetMode(lfctest.ServerError) },
			lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "500 Internal Server Error querying endpoint storage"}},
		{"corrupt body", func(r *rig) { r.store.SetMode(lfctest.Corrupt) },
			lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "decoding LFC state: invalid input: magic number mismatch"}},
		{"empty body", func(r *rig) { r.store.Put(objPath, nil) },
			lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "decoding LFC state: empty body"}},
		{"truncated frame", func(r *rig) { r.store.Put(objPath, zstdOf(r.tb, bytes.Repeat([]byte("abc"), 100))[:10]) },
			lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "decoding LFC state: "}},
		{"postgres", func(r *rig) {
			r.store.Put(objPath, zstdOf(r.tb, []byte("s")))
			r.pg.prewarmErr = errors.New("loading LFC state into postgres: boom")
		}, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "loading LFC state into postgres: boom"}},
		{"no neon extension", func(r *rig) {
			r.store.Put(objPath, zstdOf(r.tb, []byte("s")))
			r.pg.prewarmErr = lfc.ErrNoNeonExtension
		}, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "neon extension not installed"}},
		{"prewarm info", func(r *rig) {
			r.store.Put(objPath, zstdOf(r.tb, []byte("s")))
			r.pg.infErr = errors.New("querying prewarm info: nope")
		}, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: "querying prewarm info: nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.tb = t
			tc.setup(r)
			got := r.prewarm(t, "")
			if got.Status != tc.want.Status || !strings.HasPrefix(got.Error, tc.want.Error) || (tc.want.Error == "") != (got.Error == "") {
				t.Errorf("prewarm %+v, want %+v", got, tc.want)
			}
			wantErrs := uint64(0)
			if tc.want.Status == lfcstate.PrewarmFailed {
				wantErrs = 1
			}
			if c := r.core.Machine().Counters(); c.Prewarms != 1 || c.PrewarmErrors != wantErrs {
				t.Errorf("counters %+v", c)
			}
			noToken(t, "state", got.Error)
			noToken(t, "log", r.logs.String())
			if tc.want.Status == lfcstate.PrewarmFailed && !strings.Contains(r.logs.String(), "LFC prewarm failed") {
				t.Errorf("failure not logged:\n%s", r.logs)
			}
		})
	}
}

// A state that decompresses beyond the bound is refused.
func TestCorePrewarmDecompressedBound(t *testing.T) {
	r := newRig(t)
	m := lfc.NewMachine(lfc.MachineOptions{Now: r.clk.Now})
	client := lfc.NewClient(endpointOf(r.store), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	core := lfc.NewCore(m, client, r.pg, lfc.CoreOptions{MaxStateBytes: 1 << 10, Logger: slog.New(slog.DiscardHandler)})
	r.store.Put(objPath, zstdOf(t, make([]byte, 1<<20)))
	run, err := core.StartPrewarm(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := m.Prewarm(); st.Status != lfcstate.PrewarmFailed || !strings.HasPrefix(st.Error, "decoding LFC state: ") {
		t.Errorf("prewarm %+v", st)
	}
	if r.pg.got != nil {
		t.Error("an oversized state reached Postgres")
	}
}

func TestCoreCancelPrewarm(t *testing.T) {
	t.Run("during the download", func(t *testing.T) {
		r := newRig(t)
		r.store.SetMode(lfctest.Hang)
		run, err := r.core.StartPrewarm(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { run(); close(done) }()
		for len(r.store.Requests()) == 0 {
			time.Sleep(time.Millisecond)
		}
		if !r.core.CancelPrewarm() {
			t.Fatal("CancelPrewarm said nothing runs")
		}
		<-done
		if st := r.core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCancelled {
			t.Errorf("prewarm %+v", st)
		}
	})
	t.Run("during the query", func(t *testing.T) {
		r := newRig(t)
		r.store.Put(objPath, zstdOf(t, []byte("s")))
		r.pg.block = make(chan struct{})
		run, err := r.core.StartPrewarm(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { run(); close(done) }()
		<-r.pg.block
		if _, err := r.core.StartPrewarm(context.Background(), ""); !errors.Is(err, lfc.ErrPrewarmRunning) {
			t.Errorf("second prewarm: %v", err)
		}
		if _, err := r.core.StartOffload(context.Background()); !errors.Is(err, lfc.ErrPrewarmInProgress) {
			t.Errorf("offload during the prewarm: %v", err)
		}
		r.clk.Advance(time.Hour)
		if run, why := r.core.StartPeriodicOffload(context.Background()); run != nil || why != "a prewarm is in progress" {
			t.Errorf("periodic offload during the prewarm: %q", why)
		}
		r.core.CancelPrewarm()
		<-done
		if st := r.core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCancelled {
			t.Errorf("prewarm %+v", st)
		}
		if c := r.core.Machine().Counters(); c.PrewarmErrors != 0 {
			t.Errorf("counters %+v", c)
		}
	})
}

func TestCoreOffloadFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*rig)
		want  lfcstate.OffloadState
	}{
		{"empty state is not uploaded", func(r *rig) { r.pg.state = nil }, lfcstate.OffloadState{Status: lfcstate.OffloadSkipped}},
		{"state query", func(r *rig) { r.pg.stateErr = errors.New("querying LFC state: boom") },
			lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "querying LFC state: boom"}},
		{"no neon extension", func(r *rig) { r.pg.stateErr = lfc.ErrNoNeonExtension },
			lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "neon extension not installed"}},
		{"500", func(r *rig) { r.pg.state = []byte("s"); r.store.SetMode(lfctest.ServerError) },
			lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "request to endpoint storage failed: 500 Internal Server Error"}},
		{"404", func(r *rig) { r.pg.state = []byte("s"); r.store.SetMode(lfctest.NotFound) },
			lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "request to endpoint storage failed: 404 Not Found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			tc.setup(r)
			if got := r.offload(t); got != tc.want {
				t.Errorf("offload %+v, want %+v", got, tc.want)
			}
			wantErrs := uint64(0)
			if tc.want.Status == lfcstate.OffloadFailed {
				wantErrs = 1
			}
			if c := r.core.Machine().Counters(); c.Offloads != 1 || c.OffloadErrors != wantErrs {
				t.Errorf("counters %+v", c)
			}
			if tc.want.Status == lfcstate.OffloadSkipped {
				if n := len(r.store.Requests()); n != 0 {
					t.Errorf("%d requests for an empty state", n)
				}
			}
		})
	}
}

func TestCorePeriodicOffload(t *testing.T) {
	r := newRig(t)
	r.pg.state = []byte("s")
	if run, why := r.core.StartPeriodicOffload(context.Background()); run != nil || why != "not due" {
		t.Fatalf("tick before the interval: %q", why)
	}
	r.clk.Advance(time.Minute)
	run, why := r.core.StartPeriodicOffload(context.Background())
	if run == nil {
		t.Fatalf("tick refused: %q", why)
	}
	run()
	if st := r.core.Machine().Offload(); st.Status != lfcstate.OffloadCompleted {
		t.Errorf("offload %+v", st)
	}
	if !strings.Contains(r.logs.String(), "periodic=true") {
		t.Errorf("periodic offload not logged as such:\n%s", r.logs)
	}
	// After a failed prewarm: no periodic offload, but a manual one.
	r.store.SetMode(lfctest.ServerError)
	if st := r.prewarm(t, ""); st.Status != lfcstate.PrewarmFailed {
		t.Fatalf("prewarm %+v", st)
	}
	r.store.SetMode(lfctest.OK)
	r.clk.Advance(time.Minute)
	if run, why := r.core.StartPeriodicOffload(context.Background()); run != nil || why != "the last prewarm ended failed" {
		t.Errorf("tick after a failed prewarm: %q", why)
	}
	if st := r.offload(t); st.Status != lfcstate.OffloadCompleted {
		t.Errorf("manual offload after a failed prewarm: %+v", st)
	}
}

// cancellingStore cancels the prewarm while it answers: the prewarm ends cancelled
// before Postgres is asked.
type cancellingStore struct {
	lfc.Store
	core **lfc.Core
}

func (s cancellingStore) Get(ctx context.Context, ep string) ([]byte, error) {
	b, err := s.Store.Get(ctx, ep)
	(*s.core).CancelPrewarm()
	return b, err
}

func TestCoreCancelBetweenDownloadAndQuery(t *testing.T) {
	r := newRig(t)
	r.store.Put(objPath, zstdOf(t, []byte("s")))
	var core *lfc.Core
	client := lfc.NewClient(endpointOf(r.store), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)})
	core = lfc.NewCore(lfc.NewMachine(lfc.MachineOptions{Now: r.clk.Now}), cancellingStore{Store: client, core: &core}, r.pg,
		lfc.CoreOptions{Logger: slog.New(slog.DiscardHandler)})
	run, err := core.StartPrewarm(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCancelled {
		t.Errorf("prewarm %+v", st)
	}
	if r.pg.got != nil {
		t.Error("Postgres was asked after the cancel")
	}
}

// A prewarm taken while an offload reads the LFC state (POST /lfc/prewarm does not wait
// for the offload): the state read may be one of the prewarm's incomplete states, so the
// offload ends failed and uploads nothing.
func TestCoreOffloadOvertakenByAPrewarm(t *testing.T) {
	for _, periodic := range []bool{false, true} {
		t.Run(map[bool]string{false: "manual", true: "periodic"}[periodic], func(t *testing.T) {
			r := newRig(t)
			r.pg.state = []byte("a state read mid-prewarm")
			r.store.Put(objPath, zstdOf(t, []byte("the last complete state")))
			var prewarm func()
			r.pg.onState = func() {
				run, err := r.core.StartPrewarm(context.Background(), "")
				if err != nil {
					t.Errorf("prewarm during the offload refused: %v", err)
				}
				prewarm = run
			}
			var run func()
			if periodic {
				r.clk.Advance(time.Minute)
				run, _ = r.core.StartPeriodicOffload(context.Background())
			} else {
				var err error
				run, err = r.core.StartOffload(context.Background())
				if err != nil {
					t.Fatal(err)
				}
			}
			if run == nil {
				t.Fatal("no offload")
			}
			run()
			want := lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: lfc.ErrPrewarmDuringOffload.Error()}
			if got := r.core.Machine().Offload(); got != want {
				t.Errorf("offload %+v, want %+v", got, want)
			}
			if !strings.Contains(want.Error, "a prewarm started during the offload") {
				t.Errorf("reason %q", want.Error)
			}
			for _, req := range r.store.Requests() {
				if req.Method == "PUT" {
					t.Errorf("uploaded %q", req.Body)
				}
			}
			if c := r.core.Machine().Counters(); c.Offloads != 1 || c.OffloadErrors != 1 || c.Prewarms != 1 {
				t.Errorf("counters %+v", c)
			}
			// The prewarm runs on from the last complete state.
			r.pg.onState = nil
			prewarm()
			if st := r.core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCompleted || string(r.pg.got) != "the last complete state" {
				t.Errorf("prewarm %+v from %q", st, r.pg.got)
			}
			// The next offload, with no prewarm meanwhile, uploads.
			if st := r.offload(t); st.Status != lfcstate.OffloadCompleted {
				t.Errorf("next offload %+v", st)
			}
		})
	}
}

// A cancel that arrives after the prewarm query completed does not turn the completed
// prewarm into a cancelled one: its final count is read on a context the cancel does not
// end.
func TestCoreCancelAfterTheQueryCompleted(t *testing.T) {
	r := newRig(t)
	r.store.Put(objPath, zstdOf(t, []byte("s")))
	r.pg.info = lfcstate.Progress{Total: 5, Prewarmed: 5}
	r.pg.onPrewarm = func() {
		if !r.core.CancelPrewarm() {
			t.Error("CancelPrewarm said nothing runs")
		}
	}
	st := r.prewarm(t, "")
	if st.Status != lfcstate.PrewarmCompleted || st.Progress != r.pg.info {
		t.Errorf("prewarm %+v, want completed with %+v", st, r.pg.info)
	}
	if c := r.core.Machine().Counters(); c.PrewarmErrors != 0 {
		t.Errorf("counters %+v", c)
	}
}

// deadlinePG reports whether the progress query had a bound.
type deadlinePG struct {
	fakePG
	bounded bool
}

func (p *deadlinePG) PrewarmInfo(ctx context.Context) (lfcstate.Progress, error) {
	_, p.bounded = ctx.Deadline()
	return lfcstate.Progress{}, nil
}

// The final count of a prewarm is read with a bound.
func TestCorePrewarmInfoIsBounded(t *testing.T) {
	r := newRig(t)
	r.store.Put(objPath, zstdOf(t, []byte("s")))
	pg := &deadlinePG{fakePG: fakePG{clk: r.clk}}
	core := lfc.NewCore(lfc.NewMachine(lfc.MachineOptions{Now: r.clk.Now}),
		lfc.NewClient(endpointOf(r.store), lfc.ClientOptions{Logger: slog.New(slog.DiscardHandler)}), pg,
		lfc.CoreOptions{Logger: slog.New(slog.DiscardHandler)})
	run, err := core.StartPrewarm(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	run()
	if st := core.Machine().Prewarm(); st.Status != lfcstate.PrewarmCompleted || !pg.bounded {
		t.Errorf("prewarm %+v, progress query bounded: %v", st, pg.bounded)
	}
}

// mustPanic runs f and returns what it panicked with.
func mustPanic(t *testing.T, f func()) (p any) {
	t.Helper()
	defer func() { p = recover() }()
	f()
	t.Fatal("no panic")
	return nil
}

// A run that panics does not wedge the machine: it is recorded failed, and the panic goes
// on.
func TestCoreRunPanics(t *testing.T) {
	t.Run("prewarm", func(t *testing.T) {
		r := newRig(t)
		r.store.Put(objPath, zstdOf(t, []byte("s")))
		r.pg.onPrewarm = func() { panic("boom") }
		run, err := r.core.StartPrewarm(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if p := mustPanic(t, run); p != "boom" {
			t.Errorf("re-panicked with %v", p)
		}
		if st := r.core.Machine().Prewarm(); st.Status != lfcstate.PrewarmFailed || st.Error != "panic: boom" {
			t.Errorf("prewarm %+v", st)
		}
		if c := r.core.Machine().Counters(); c.PrewarmErrors != 1 {
			t.Errorf("counters %+v", c)
		}
		r.pg.onPrewarm = nil
		if st := r.prewarm(t, ""); st.Status != lfcstate.PrewarmCompleted {
			t.Errorf("next prewarm %+v", st)
		}
		if st := r.offload(t); st.Status != lfcstate.OffloadSkipped {
			t.Errorf("offload after it %+v", st)
		}
	})
	t.Run("offload", func(t *testing.T) {
		r := newRig(t)
		r.pg.onState = func() { panic("boom") }
		run, err := r.core.StartOffload(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p := mustPanic(t, run); p != "boom" {
			t.Errorf("re-panicked with %v", p)
		}
		if st := r.core.Machine().Offload(); st.Status != lfcstate.OffloadFailed || st.Error != "panic: boom" {
			t.Errorf("offload %+v", st)
		}
		if c := r.core.Machine().Counters(); c.OffloadErrors != 1 {
			t.Errorf("counters %+v", c)
		}
		r.pg.onState = nil
		r.pg.state = []byte("s")
		if st := r.offload(t); st.Status != lfcstate.OffloadCompleted {
			t.Errorf("next offload %+v", st)
		}
		if _, err := r.core.StartPrewarm(context.Background(), ""); err != nil {
			t.Errorf("prewarm after it: %v", err)
		}
	})
}
