package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeSystemd records unit calls and answers the handshake's questions.
type fakeSystemd struct {
	mu        sync.Mutex
	calls     []string
	pending   bool
	waiting   int // StartWaiting answers true this many times
	inv       string
	active    string
	errAlways error
}

func (f *fakeSystemd) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeSystemd) got() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, ",")
}

func (f *fakeSystemd) StopUnit(_ context.Context, name string) error {
	f.record("stop " + name)
	return f.errAlways
}

func (f *fakeSystemd) QueueStop(_ context.Context, name string) error {
	f.record("queue stop " + name)
	return f.errAlways
}

func (f *fakeSystemd) PowerOff(_ context.Context) error {
	f.record("poweroff")
	return f.errAlways
}

func (f *fakeSystemd) RestartUnit(_ context.Context, name string) error {
	f.record("restart " + name)
	return f.errAlways
}

func (f *fakeSystemd) ActiveState(_ context.Context, name string) (string, error) {
	f.record("active? " + name)
	return f.active, f.errAlways
}

func (f *fakeSystemd) PendingStart(_ context.Context, name string) (bool, error) {
	return f.pending, f.errAlways
}

func (f *fakeSystemd) StartWaiting(_ context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiting > 0 {
		f.waiting--
		return true, nil
	}
	return false, f.errAlways
}

func (f *fakeSystemd) InvocationID(_ context.Context, name string) (string, error) {
	return f.inv, f.errAlways
}

func TestUnits(t *testing.T) {
	ctx := context.Background()
	f := &fakeSystemd{active: "active"}
	u := units{f}
	_ = u.StopPostgres(ctx, false)
	_ = u.StopPostgres(ctx, true)
	_ = u.CancelStartup(ctx)
	_ = u.Reconfigure(ctx)
	if ok, err := u.PostgresActive(ctx); !ok || err != nil {
		t.Errorf("active: %v %v", ok, err)
	}
	_ = u.StopCompute(ctx)
	_ = u.PowerOff(ctx)
	// Both modes are the unit's stop (KillSignal=SIGINT, the fast shutdown), as compute_ctl.
	want := "stop compute-postgres.service,stop compute-postgres.service," +
		"stop compute-init.service,restart compute-configure.service,active? compute-postgres.service," +
		"queue stop compute.target,poweroff"
	if got := f.got(); got != want {
		t.Errorf("calls\n got %s\nwant %s", got, want)
	}

	f = &fakeSystemd{errAlways: errors.New("job failed"), active: "deactivating"}
	u = units{f}
	if err := u.StopPostgres(ctx, true); err == nil {
		t.Error("stop error lost")
	}
	f.errAlways = nil
	if ok, _ := u.PostgresActive(ctx); ok {
		t.Error("deactivating taken for active")
	}
}

func TestExtractJWKS(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{`{"compute_ctl_config":{"jwks":{"keys":[]}},"spec":{"bad":true}}`, `{"keys":[]}`, ""},
		{`{"spec":null}`, "", "missing compute_ctl_config.jwks"},
		{`{"compute_ctl_config":{}}`, "", "missing compute_ctl_config.jwks"},
		{`not json`, "", "parse config:"},
	} {
		got, err := extractJWKS([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %s, %v", tc.in, got, err)
		}
	}
}

// keys makes a key set and a config file holding it.
func keys(t *testing.T) (priv []byte, jwks []byte, configFile string) {
	t.Helper()
	priv, jwks, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	configFile = filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(configFile, []byte(`{"spec":null,"compute_ctl_config":{"jwks":`+string(jwks)+`}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, jwks, configFile
}

func token(t *testing.T, priv []byte, computeID string) string {
	t.Helper()
	tok, err := auth.MintToken(priv, auth.TokenClaims{ComputeID: computeID, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoadVerifier(t *testing.T) {
	priv, _, cfgFile := keys(t)
	tok := "Bearer " + token(t, priv, "c1")
	v, err := loadVerifier(cfgFile, "c1", quiet())
	if err != nil || v.Keys() != 1 || v.Authorize(tok) != nil {
		t.Fatalf("config with keys: %v", err)
	}
	v, err = loadVerifier(filepath.Join(t.TempDir(), "none.json"), "c1", quiet())
	if err != nil || v.Keys() != 0 || v.Authorize(tok) == nil {
		t.Errorf("no config file: keys %d, %v", v.Keys(), err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"spec":{}}`), 0o600)
	v, err = loadVerifier(bad, "c1", quiet())
	if err != nil || v.Keys() != 0 {
		t.Errorf("config without keys: %v", err)
	}
	if _, err := loadVerifier(t.TempDir(), "c1", quiet()); err == nil || !strings.HasPrefix(err.Error(), "read config:") {
		t.Errorf("unreadable config: %v", err)
	}
}

func TestSpecFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "spec.json")
	if _, err := appliedConfigFile(p).CurrentSpec(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	_ = os.WriteFile(p, []byte("{"), 0o600)
	if _, err := appliedConfigFile(p).CurrentSpec(); err == nil || !strings.Contains(err.Error(), "parse "+p) {
		t.Errorf("bad file: %v", err)
	}
	raw, err := os.ReadFile("../spec/testdata/config_standalone.json")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(p, raw, 0o600)
	s, err := appliedConfigFile(p).CurrentSpec()
	if err != nil || s == nil || s.Cluster.Name == nil || *s.Cluster.Name != "standalone" {
		t.Errorf("spec %+v, %v", s, err)
	}
}

func TestFetchJWKS(t *testing.T) {
	withKeys, err := spec.ParseConfig([]byte(`{"spec":null,"compute_ctl_config":{"jwks":{"keys":[]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	noKeys := &spec.ComputeConfig{}
	var installed []string
	install := func(b json.RawMessage) error { installed = append(installed, string(b)); return nil }

	// Failures are retried until an answer comes; its key set is installed once.
	calls := 0
	fetch := func(context.Context) (*spec.ComputeConfig, error) {
		calls++
		if calls < 3 {
			return nil, errors.New("503")
		}
		return withKeys, nil
	}
	fetchJWKS(context.Background(), fetch, install, time.Millisecond, quiet())
	if calls != 3 || len(installed) != 1 || installed[0] != `{"keys":[]}` {
		t.Errorf("%d calls, installed %q", calls, installed)
	}

	// An answer without keys installs nothing and ends the task.
	installed, calls = nil, 0
	fetchJWKS(context.Background(), func(context.Context) (*spec.ComputeConfig, error) { calls++; return noKeys, nil }, install, time.Millisecond, quiet())
	if calls != 1 || len(installed) != 0 {
		t.Errorf("without keys: %d calls, installed %q", calls, installed)
	}

	// The end of ctx ends the retries.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		fetchJWKS(ctx, func(context.Context) (*spec.ComputeConfig, error) { return nil, errors.New("down") }, install, time.Hour, quiet())
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("fetchJWKS did not return when its context ended")
	}
}

func TestWaitForLifecycle(t *testing.T) {
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSystemd{inv: "inv-2", waiting: 2}
	w := &statetest.Waker{}
	go func() {
		time.Sleep(30 * time.Millisecond)
		_, err := store.Update(func(r *state.Record) error { r.InitInvocation = "inv-2"; return nil })
		if err != nil {
			t.Error(err)
		}
		w.Notify()
	}()
	start := time.Now()
	waitForLifecycle(context.Background(), store, w, f, 5*time.Second, quiet())
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("handshake took %s", el)
	}
	if r, _ := store.Load(); r.InitInvocation != "inv-2" {
		t.Error("returned before compute-init marked the record")
	}
	if w.Open() != 0 {
		t.Error("the subscription is left open")
	}
}

func TestWaitForLifecycleGivesUp(t *testing.T) {
	store, _ := state.Open(t.TempDir())
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	start := time.Now()
	waitForLifecycle(context.Background(), store, &statetest.Waker{}, &fakeSystemd{inv: "inv-9"}, 100*time.Millisecond, log)
	if el := time.Since(start); el < 100*time.Millisecond || el > 3*time.Second {
		t.Errorf("gave up after %s", el)
	}
	if !strings.Contains(logged.String(), "serving anyway") {
		t.Errorf("log %q", logged.String())
	}
}

func TestGroupWaits(t *testing.T) {
	var g group
	release := make(chan struct{})
	for range 3 {
		g.Go(func() { <-release })
	}
	if s, r := g.counts(); s != 3 || r != 3 {
		t.Errorf("started %d running %d", s, r)
	}
	done := make(chan struct{})
	go func() { g.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("Wait returned while goroutines run")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-done
	if _, r := g.counts(); r != 0 {
		t.Errorf("%d still running after Wait", r)
	}
}

func TestGroupWaitTimeout(t *testing.T) {
	var g group
	release := make(chan struct{})
	g.Go(func() { <-release })
	if g.WaitTimeout(10 * time.Millisecond) {
		t.Fatal("WaitTimeout reported done while a goroutine runs")
	}
	close(release)
	if !g.WaitTimeout(5 * time.Second) {
		t.Fatal("WaitTimeout timed out after the goroutine returned")
	}
}

// The controller's background work (a promotion) is one of the server's tasks: shutdown
// cancels its context and waits for it; work that comes once shutdown began gets the
// cancelled context outside the group.
func TestServerTasks(t *testing.T) {
	var g group
	ctx, cancel := context.WithCancel(context.Background())
	st := serverTasks{g: &g, ctx: ctx}
	ended := make(chan struct{})
	st.Go(func(ctx context.Context) {
		<-ctx.Done()
		close(ended)
	})
	if s, r := g.counts(); s != 1 || r != 1 {
		t.Fatalf("started %d running %d, want the task in the group", s, r)
	}
	cancel()
	g.Wait()
	select {
	case <-ended:
	default:
		t.Fatal("Wait returned before the task ended")
	}
	late := make(chan error, 1)
	st.Go(func(ctx context.Context) { late <- ctx.Err() })
	if err := <-late; !errors.Is(err, context.Canceled) {
		t.Errorf("late task's context: %v", err)
	}
	if s, _ := g.counts(); s != 1 {
		t.Errorf("a task started after shutdown joined the group (%d started)", s)
	}
}
