package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testComputeID = "compute-test-1"
	testTenant    = "c9269c359e9a199fad1ea0981246a78f"
	testTimeline  = "ece7de74d4b8cbe5433a68ce4d1b97b4"
	testLSN       = "0/16B5A50"
)

// fakeUnits drives the store the way systemd and our unit hooks do.
type fakeUnits struct {
	store *state.Store
	// hook, when set, runs as the Postgres unit's stop hook (synchronously, inside the
	// stop job). Nil: no hook.
	hook      func() error
	stopErr   error
	cancelErr error

	// reconfigure, when set, runs as the configure unit does on a restart.
	reconfigure    func() error
	reconfigureErr error
	pgActive       bool
	reconfigures   int

	mu             sync.Mutex
	stops          []bool         // immediate flag of each StopPostgres
	statusAtStop   []state.Status // status seen when StopPostgres was called
	cancelStartups int
}

func (u *fakeUnits) StopPostgres(ctx context.Context, immediate bool) error {
	rec, _ := u.store.Load()
	u.mu.Lock()
	u.stops = append(u.stops, immediate)
	u.statusAtStop = append(u.statusAtStop, rec.Status)
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

// States is for control.Reconcile, which the API's routes never run.
func (u *fakeUnits) States(ctx context.Context) (control.UnitStates, error) {
	return control.UnitStates{}, errors.New("not used by the routes")
}

// noSpec is a compute that has no spec yet (the extension server answers 409).
type noSpec struct{}

func (noSpec) CurrentSpec() (*spec.ComputeSpec, error) { return nil, nil }

// neonStopHook is what the Postgres unit's stop hook does in neon mode: final sync,
// then terminated with the LSN.
func neonStopHook(store *state.Store, lsn string) func() error {
	return func() error {
		_, _, err := store.CompleteTermination(state.ActorStopHook, &lsn)
		return err
	}
}

type pendingSink struct {
	mu    sync.Mutex
	calls [][]byte
	err   error
	// statusDuring is the status on disk while the writer runs.
	statusDuring []state.Status
	store        *state.Store
}

func (p *pendingSink) write(raw []byte) error {
	st := state.Empty
	if rec, err := p.store.Load(); err == nil {
		st = rec.Status
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, append([]byte(nil), raw...))
	p.statusDuring = append(p.statusDuring, st)
	return p.err
}

func (p *pendingSink) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

type harness struct {
	t       testing.TB
	store   *state.Store
	waker   *statetest.Waker
	units   *fakeUnits
	pending *pendingSink
	srv     *Server
	key     ed25519.PrivateKey
	logs    *syncBuffer
	// level is the test logger's level (info unless a test lowers it).
	level   *slog.LevelVar
	started time.Time
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harnessConfig is what an option may change: the server's and the controller's
// configuration.
type harnessConfig struct {
	api Options
	ctl control.Deps
}

type option func(*harnessConfig)

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	waker := &statetest.Waker{}
	store.OnChange = func(state.Record) { waker.Notify() }
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	level := &slog.LevelVar{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	jwks := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q,"kid":"k1","alg":"EdDSA","use":"sig","key_ops":["verify"]}]}`,
		base64.RawURLEncoding.EncodeToString(pub))
	v, err := auth.NewVerifier(json.RawMessage(jwks), testComputeID, auth.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: store, waker: waker, key: priv, logs: logs, level: level,
		units:   &fakeUnits{store: store},
		pending: &pendingSink{store: store},
		started: time.Date(2025, 7, 17, 12, 0, 0, 520_000_000, time.UTC),
	}
	h.units.hook = neonStopHook(store, testLSN)
	cfg := harnessConfig{
		ctl: control.Deps{
			Store:              store,
			Waker:              waker,
			Units:              h.units,
			WritePendingConfig: h.pending.write,
			Logger:             log,
			Now:                func() time.Time { return h.started },
		},
		api: Options{
			Verifier:        v,
			ComputeID:       testComputeID,
			BuildTag:        "v1.2.3",
			Logger:          log,
			ExtensionServer: extensions.NewHandler(noSpec{}, &extensions.Downloader{}),
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctl := control.New(cfg.ctl)
	t.Cleanup(ctl.WaitRefreshes) // before the state directory goes
	cfg.api.Control = ctl
	h.srv = New(cfg.api)
	return h
}

func (h *harness) token(claims map[string]any) string {
	h.t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: h.key}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func (h *harness) computeToken() string { return h.token(map[string]any{"compute_id": testComputeID}) }
func (h *harness) adminToken() string {
	return h.token(map[string]any{"scope": auth.AdminScope, "aud": []string{"compute"}})
}

type reqOpt func(*http.Request)

func withToken(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }
func jsonBody() reqOpt              { return withHeader("Content-Type", "application/json") }

func (h *harness) do(handler http.Handler, method, target, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	return h.doCtx(context.Background(), handler, method, target, body, opts...)
}

func (h *harness) doCtx(ctx context.Context, handler http.Handler, method, target, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body)).WithContext(ctx)
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	validated(h.t, handler).ServeHTTP(w, r)
	return w
}

// validated wraps a port's handler so that every answer is checked against
// api/openapi.yaml (internal/openapitest): a response the document does not describe
// fails the test. Every handler test goes through here (h.do, h.doCtx, h.async).
func validated(t testing.TB, handler http.Handler) http.Handler {
	ph, ok := handler.(*portHandler)
	if !ok {
		t.Fatalf("request to %T, not to a port's handler (Server.External or Internal)", handler)
	}
	return openapitest.Load(t).Wrap(t, ph.port, handler)
}

// async runs a request in the background; the channel yields its response.
func (h *harness) async(ctx context.Context, method, target, body string, opts ...reqOpt) <-chan *httptest.ResponseRecorder {
	ch := make(chan *httptest.ResponseRecorder, 1)
	go func() { ch <- h.doCtx(ctx, h.srv.External(), method, target, body, opts...) }()
	return ch
}

// waitStatus blocks until the store reaches st (the test's deadline bounds it).
func (h *harness) waitStatus(st state.Status) {
	h.t.Helper()
	wake, cancel := h.waker.Subscribe()
	defer cancel()
	if _, err := h.store.Wait(context.Background(), wake, 50*time.Millisecond, func(r state.Record) bool { return r.Status == st }); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) status() state.Status {
	h.t.Helper()
	rec, err := h.store.Load()
	if errors.Is(err, state.ErrNoState) {
		return state.Empty
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return rec.Status
}

// moveTo gives the store each status of path in turn (statetest: any move is allowed).
func (h *harness) moveTo(path ...state.Status) {
	h.t.Helper()
	for _, st := range path {
		if _, err := statetest.Set(h.store, st, nil); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) toRunning(storage spec.StorageMode) {
	h.t.Helper()
	h.moveTo(state.Init)
	if _, err := statetest.Set(h.store, state.Running, func(r *state.Record) { r.Storage, r.Mode = storage, "primary" }); err != nil {
		h.t.Fatal(err)
	}
}

func errorBody(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json (body %q)", ct, w.Body.String())
	}
	var e map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	msg, ok := e["error"].(string)
	if !ok || len(e) != 1 {
		t.Fatalf("error body %q is not {\"error\": string}", w.Body.String())
	}
	return msg
}

func expect(t testing.TB, w *httptest.ResponseRecorder, status int, errMsg string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d (body %q)", w.Code, status, w.Body.String())
	}
	if errMsg != "" {
		if got := errorBody(t, w); got != errMsg {
			t.Fatalf("error = %q, want %q", got, errMsg)
		}
	}
}
