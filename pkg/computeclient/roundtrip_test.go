package computeclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/api"
	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/computetools/compute-tools/pkg/computeclient"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The client against the real handlers (internal/api) and the real controller
// (internal/control) over a real state store; only systemd and compute-monitor are
// stood in for (units, monitor). Every answer is also checked against api/openapi.yaml.

const (
	computeID = "compute-client-1"
	tenant    = "c9269c359e9a199fad1ea0981246a78f"
	timeline  = "ece7de74d4b8cbe5433a68ce4d1b97b4"
	finalLSN  = "0/16B5A50"
)

const neonSpec = `{"format_version":1.0,"suspend_timeout_seconds":-1,"cluster":{"roles":[],"databases":[]},` +
	`"tenant_id":"` + tenant + `","timeline_id":"` + timeline + `",` +
	`"pageserver_connstring":"postgresql://no_user@localhost:64000","safekeeper_connstrings":["localhost:5454"]}`

// units stands for systemd: stopping Postgres runs the neon stop hook (the final sync
// records the LSN and terminated).
type units struct {
	store *state.Store
	mu    sync.Mutex
	stops []bool
	// reconfigure, when set, runs as the configure unit does on a restart.
	reconfigure func() error
}

func (u *units) StopPostgres(ctx context.Context, immediate bool) error {
	u.mu.Lock()
	u.stops = append(u.stops, immediate)
	u.mu.Unlock()
	lsn := finalLSN
	_, _, err := u.store.CompleteTermination(state.ActorStopHook, &lsn)
	return err
}
func (u *units) CancelStartup(context.Context) error { return nil }
func (u *units) Reconfigure(context.Context) error {
	if u.reconfigure != nil {
		go func() { _ = u.reconfigure() }()
	}
	return nil
}
func (u *units) PostgresActive(context.Context) (bool, error) { return true, nil }
func (u *units) States(context.Context) (control.UnitStates, error) {
	return control.UnitStates{Init: "inactive", Postgres: "active", Configure: "inactive"}, nil
}
func (u *units) stopCalls() []bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]bool(nil), u.stops...)
}

// monitor stands for compute-monitor's LFC methods.
type monitor struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (m *monitor) call(c string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, c)
	return m.err
}
func (m *monitor) LFCPrewarm(_ context.Context, from string) error {
	return m.call("prewarm(" + from + ")")
}
func (m *monitor) LFCOffload(context.Context) error               { return m.call("offload") }
func (m *monitor) LFCCancelPrewarm(context.Context) (bool, error) { return true, m.call("cancel") }

type noSpec struct{}

func (noSpec) CurrentSpec() (*spec.ComputeSpec, error) { return nil, nil }

type env struct {
	t        *testing.T
	store    *state.Store
	waker    *statetest.Waker
	units    *units
	monitor  *monitor
	key      ed25519.PrivateKey
	client   *computeclient.Client
	internal *computeclient.Internal
	extURL   string
}

func newEnv(t *testing.T, opts ...func(*api.Options)) *env {
	t.Helper()
	return newEnvDeps(t, nil, opts...)
}

// newEnvDeps is newEnv with deps changing the controller's dependencies (the store is
// in deps.Store) before it is built.
func newEnvDeps(t *testing.T, deps func(*control.Deps), opts ...func(*api.Options)) *env {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	jwks := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q,"alg":"EdDSA"}]}`, base64.RawURLEncoding.EncodeToString(pub))
	v, err := auth.NewVerifier(json.RawMessage(jwks), computeID, auth.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: store, waker: waker, units: &units{store: store}, monitor: &monitor{}, key: priv}
	d := control.Deps{
		Store: store, Waker: waker, Units: e.units, LFC: e.monitor, Logger: log,
		WritePendingConfig: func([]byte) error { return nil },
	}
	if deps != nil {
		deps(&d)
	}
	ctl := control.New(d)
	o := api.Options{Control: ctl, Verifier: v, ComputeID: computeID, BuildTag: "v1", Logger: log,
		ExtensionServer: extensions.NewHandler(noSpec{}, &extensions.Downloader{})}
	for _, opt := range opts {
		opt(&o)
	}
	srv := api.New(o)
	doc := openapitest.Load(t)
	ext := httptest.NewServer(doc.Wrap(t, openapitest.External, srv.External()))
	in := httptest.NewServer(doc.Wrap(t, openapitest.Internal, srv.Internal()))
	t.Cleanup(ext.Close)
	t.Cleanup(in.Close)
	e.extURL = ext.URL
	e.client = e.newClient(map[string]any{"compute_id": computeID})
	if e.internal, err = computeclient.NewInternal(in.URL); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) token(claims map[string]any) string {
	e.t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: e.key}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) newClient(claims map[string]any) *computeclient.Client {
	e.t.Helper()
	c, err := computeclient.New(e.extURL, computeclient.StaticToken(e.token(claims)))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) set(st state.Status, fn func(*state.Record)) {
	e.t.Helper()
	statetest.MustSet(e.t, e.store, st, fn)
}

func (e *env) waitStatus(st state.Status) {
	e.t.Helper()
	wake, cancel := e.waker.Subscribe()
	defer cancel()
	if _, err := e.store.Wait(context.Background(), wake, 50*time.Millisecond, func(r state.Record) bool { return r.Status == st }); err != nil {
		e.t.Fatal(err)
	}
}

func wantError(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var ae *computeclient.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want *computeclient.Error %d", err, err, code)
	}
	if ae.StatusCode != code || (msg != "" && ae.Message != msg) {
		t.Fatalf("error %d %q, want %d %q", ae.StatusCode, ae.Message, code, msg)
	}
	if ae.RequestID == "" {
		t.Fatal("no request id in the error")
	}
	if computeclient.StatusCode(fmt.Errorf("wrapped: %w", err)) != code {
		t.Fatal("StatusCode does not see through wrapping")
	}
}

// Every status decodes, termination_pending_fast and _immediate included.
func TestStatusEveryState(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got, err := e.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != computeclient.StatusEmpty || got.Tenant != nil || got.Error != nil {
		t.Fatalf("before any record: %+v", got)
	}
	for _, st := range state.All {
		e.set(st, func(r *state.Record) {
			tn := tenant
			r.Tenant = &tn
			if st == state.Failed {
				r.SetError("boom \"quoted\"")
			}
		})
		got, err := e.client.Status(ctx)
		if err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		if got.Status != st || got.Tenant == nil || *got.Tenant != tenant {
			t.Fatalf("%s: got %+v", st, got)
		}
		if st == state.Failed && (got.Error == nil || *got.Error != "boom \"quoted\"") {
			t.Fatalf("failed: error %v", got.Error)
		}
	}
	for _, want := range []computeclient.ComputeStatus{computeclient.StatusTerminationPendingFast, computeclient.StatusTerminationPendingImmediate} {
		e.set(want, nil)
		if got, err := e.client.Status(ctx); err != nil || got.Status != want || string(got.Status) != strings.ReplaceAll(string(want), "-", "_") {
			t.Fatalf("status %v, %v; want %s", got, err, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	want := state.Metrics{WaitForSpecMs: 1, BasebackupBytes: 1 << 40, TotalExtDownloadSize: 13}
	if _, err := e.store.Update(func(r *state.Record) error { r.Metrics = want; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := e.client.MetricsJSON(context.Background())
	if err != nil || *got != want {
		t.Fatalf("metrics %+v, %v; want %+v", got, err, want)
	}
	// /metrics needs no token: a client without one reads it.
	anon, err := computeclient.New(e.extURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := anon.PrometheusMetrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if !strings.Contains(string(b), `compute_ctl_up{build_tag="v1",status="empty"} 1`) {
		t.Fatalf("metrics:\n%s", b)
	}
	if _, err := anon.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Fatalf("a call that needs a token without one: %v", err)
	}
}

func TestConfigure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg, err := spec.ParseConfig([]byte(`{"spec":` + neonSpec + `,"compute_ctl_config":{"jwks":{"keys":[]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp *computeclient.StatusResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := e.client.Configure(ctx, cfg)
		done <- result{r, err}
	}()
	e.waitStatus(state.ConfigurationPending)
	e.set(state.Init, nil)
	e.set(state.Running, nil)
	r := <-done
	if r.err != nil || r.resp.Status != computeclient.StatusRunning || r.resp.Timeline == nil || *r.resp.Timeline != timeline {
		t.Fatalf("configure: %+v, %v", r.resp, r.err)
	}

	// A second configuration that fails: 500 with the reason.
	go func() {
		r, err := e.client.ConfigureRaw(ctx, []byte(`{"spec":`+neonSpec+`,"compute_ctl_config":{"jwks":{"keys":[]}}}`))
		done <- result{r, err}
	}()
	e.waitStatus(state.ConfigurationPending)
	if _, _, err := e.store.Fail(state.ActorConfigure, "apply: role x"); err != nil {
		t.Fatal(err)
	}
	wantError(t, (<-done).err, 500, `compute configuration failed: "apply: role x"`)

	// A status that forbids it: 412; a bad body: 422.
	e.set(state.Init, nil)
	_, err = e.client.Configure(ctx, cfg)
	wantError(t, err, 412, "invalid compute status: init")
	_, err = e.client.ConfigureRaw(ctx, []byte(`{"spec":{}}`))
	wantError(t, err, 422, "failed to deserialize the json body into the target type: missing field `compute_ctl_config`")
}

func TestTerminate(t *testing.T) {
	for _, mode := range []computeclient.TerminateMode{computeclient.TerminateDefault, computeclient.TerminateFast, computeclient.TerminateImmediate} {
		t.Run(string(mode), func(t *testing.T) {
			// From empty: the waiting startup is stopped, terminated at once, no LSN.
			e := newEnv(t)
			admin := e.newClient(map[string]any{"scope": auth.AdminScope, "aud": []string{"compute"}})
			ctx := context.Background()
			resp, already, err := admin.Terminate(ctx, mode)
			if err != nil || already || resp.LSN != nil {
				t.Fatalf("terminate from empty: %+v %v %v", resp, already, err)
			}
			// A status that forbids it, then a running neon primary.
			e2 := newEnv(t)
			admin = e2.newClient(map[string]any{"scope": auth.AdminScope, "aud": []string{"compute"}})
			e2.set(state.Init, nil)
			_, _, err = admin.Terminate(ctx, mode)
			wantError(t, err, 412, "invalid compute status: init")
			e2.set(state.Running, func(r *state.Record) { r.Storage, r.Mode = spec.StorageNeon, spec.ModeTypePrimary })
			resp, already, err = admin.Terminate(ctx, mode)
			if err != nil || already || resp.LSN == nil || *resp.LSN != finalLSN {
				t.Fatalf("terminate: %+v %v %v", resp, already, err)
			}
			if calls := e2.units.stopCalls(); len(calls) != 1 || calls[0] != (mode == computeclient.TerminateImmediate) {
				t.Fatalf("stop calls %v for mode %q", calls, mode)
			}
			resp, already, err = admin.Terminate(ctx, mode)
			if err != nil || !already || resp.LSN == nil || *resp.LSN != finalLSN {
				t.Fatalf("second terminate: %+v %v %v", resp, already, err)
			}
			if st, err := admin.Status(ctx); err != nil || st.Status != computeclient.StatusTerminated {
				t.Fatalf("status after terminate: %+v %v", st, err)
			}
		})
	}
}

// Every LFC prewarm and offload state decodes to what compute-monitor published.
func TestLFCStates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.client.LFCPrewarmState(ctx)
	if err != nil || p.Status != computeclient.PrewarmNotPrewarmed {
		t.Fatalf("initial prewarm state %+v, %v", p, err)
	}
	o, err := e.client.LFCOffloadState(ctx)
	if err != nil || o.Status != computeclient.OffloadNotOffloaded {
		t.Fatalf("initial offload state %+v, %v", o, err)
	}
	seq := uint64(0)
	for _, st := range lfcstate.PrewarmStatuses {
		want := lfcstate.PrewarmState{Status: st, Progress: lfcstate.Progress{Total: 10, Prewarmed: 7, Skipped: 2}}
		switch st {
		case lfcstate.PrewarmFailed:
			want.Error = "500 Internal Server Error querying endpoint storage"
		case lfcstate.PrewarmCompleted:
			want.Timings = lfcstate.PrewarmTimings{StateDownloadMs: 3, UncompressMs: 1, PrewarmMs: 40}
		}
		seq++
		e.set(state.Running, func(r *state.Record) { r.LFC = &lfcstate.States{Seq: seq, Prewarm: want} })
		got, err := e.client.LFCPrewarmState(ctx)
		if err != nil || *got != want {
			t.Fatalf("prewarm %s: got %+v, %v; want %+v", st, got, err, want)
		}
	}
	for _, st := range lfcstate.OffloadStatuses {
		want := lfcstate.OffloadState{Status: st}
		switch st {
		case lfcstate.OffloadFailed:
			want.Error = "upload: 403 Forbidden"
		case lfcstate.OffloadCompleted:
			want.Timings = lfcstate.OffloadTimings{StateQueryMs: 5, CompressMs: 2, StateUploadMs: 9}
		}
		seq++
		e.set(state.Running, func(r *state.Record) { r.LFC = &lfcstate.States{Seq: seq, Offload: want} })
		got, err := e.client.LFCOffloadState(ctx)
		if err != nil || *got != want {
			t.Fatalf("offload %s: got %+v, %v; want %+v", st, got, err, want)
		}
	}
}

func TestLFCRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.client.LFCPrewarm(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.client.LFCPrewarm(ctx, "ep-other 1/x"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.LFCOffload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.client.LFCCancelPrewarm(ctx); err != nil {
		t.Fatal(err)
	}
	e.monitor.mu.Lock()
	calls := strings.Join(e.monitor.calls, ",")
	e.monitor.err = &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: "Multiple requests for prewarm are not allowed"}
	e.monitor.mu.Unlock()
	if calls != "prewarm(),prewarm(ep-other 1/x),offload,cancel" {
		t.Fatalf("monitor calls %s", calls)
	}
	wantError(t, e.client.LFCPrewarm(ctx, ""), 429, "Multiple requests for prewarm are not allowed")
	e.monitor.mu.Lock()
	e.monitor.err = fmt.Errorf("%w: stopped", lfcstate.ErrUnavailable)
	e.monitor.mu.Unlock()
	wantError(t, e.client.LFCOffload(ctx), 503, "compute-monitor is not available: stopped")
}

func TestAuthErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	other := e.newClient(map[string]any{"compute_id": "someone-else"})
	_, err := other.Status(ctx)
	wantError(t, err, 403, auth.MsgInvalidComputeID)
	bad, err := computeclient.New(e.extURL, computeclient.StaticToken("not-a-jwt"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Status(ctx)
	wantError(t, err, 401, auth.MsgVerifyFailed)
	failing, _ := computeclient.New(e.extURL, func(context.Context) (string, error) { return "", errors.New("vault sealed") })
	if _, err := failing.Status(ctx); err == nil || !strings.Contains(err.Error(), "vault sealed") {
		t.Fatalf("token source error: %v", err)
	}
}

func TestInternalExtensionServer(t *testing.T) {
	e := newEnv(t)
	err := e.internal.DownloadExtension(context.Background(), "lib/postgis-3.so", true)
	// No extension gateway configured (internal/extensions tests the downloads).
	wantError(t, err, 412, "remote storage is not configured")
}

// A context deadline ends a blocked call on the client side.
func TestContextBoundsBlockedCall(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.client.ConfigureRaw(ctx, []byte(`{"spec":`+neonSpec+`,"compute_ctl_config":{"jwks":{"keys":[]}}}`))
		done <- err
	}()
	e.waitStatus(state.ConfigurationPending)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled configure: %v", err)
	}
}
