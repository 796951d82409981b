package localproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/localproxy"
	"github.com/computetools/compute-tools/internal/spec"
)

// The stand-in for local_proxy (Neon's binary) is this test binary started with
// LOCALPROXY_STANDIN=<dir>: it locks and writes <dir>/pid as local_proxy does, appends
// each SIGHUP to <dir>/signals, and on SIGTERM appends TERM and exits.
func TestMain(m *testing.M) {
	if dir := os.Getenv("LOCALPROXY_STANDIN"); dir != "" {
		standIn(dir)
		return
	}
	os.Exit(m.Run())
}

func standIn(dir string) {
	f, err := os.OpenFile(filepath.Join(dir, "pid"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		panic(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		panic(err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Println("ready")
	for s := range ch {
		rec, err := os.OpenFile(filepath.Join(dir, "signals"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			panic(err)
		}
		// The config as the stand-in reads it on the signal.
		cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		name := "HUP"
		if s == syscall.SIGTERM {
			name = "TERM"
		}
		fmt.Fprintf(rec, "%s %d\n", name, len(cfg))
		rec.Close()
		if s == syscall.SIGTERM {
			os.Exit(0)
		}
	}
}

// startStandIn starts the stand-in in dir and waits until it holds its pid file.
func startStandIn(t *testing.T, dir string) *execx.Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := execx.Start(ctx, execx.Cmd{Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: []string{"LOCALPROXY_STANDIN=" + dir}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	line, err := bufio.NewReader(p.Stdout()).ReadString('\n')
	if err != nil || line != "ready\n" {
		cancel()
		t.Fatalf("stand-in: %q %v (stderr %s)", line, err, p.Stderr())
	}
	t.Cleanup(func() {
		cancel()
		_, _ = p.Wait()
	})
	return p
}

// signals waits until the stand-in recorded n signals and returns them.
func signals(t *testing.T, dir string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "signals"))
		lines := strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("stand-in recorded %q, want %d signals", b, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testSpec() *spec.LocalProxySpec {
	aud := "aud1"
	return &spec.LocalProxySpec{JWKS: []spec.JWKSSettings{{ID: "j1", RoleNames: []string{"authenticated", "anonymous"}, JWKSURL: "https://example.com/.well-known/jwks.json", ProviderName: "p", JWTAudience: &aud}}}
}

func TestConfigureWritesAndSignals(t *testing.T) {
	dir := t.TempDir()
	startStandIn(t, dir)
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "config.json"), PidFile: filepath.Join(dir, "pid")}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var back spec.LocalProxySpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.JWKS) != 1 || back.JWKS[0].JWKSURL != "https://example.com/.well-known/jwks.json" || back.JWKS[0].RoleNames[1] != "anonymous" || *back.JWKS[0].JWTAudience != "aud1" {
		t.Errorf("config file: %s", b)
	}
	if !strings.Contains(string(b), "\n  \"jwks\": [") {
		t.Errorf("config file is not pretty JSON:\n%s", b)
	}
	got := signals(t, dir, 1)
	// The stand-in saw the whole new file when the signal came.
	if want := "HUP_" + strconv.Itoa(len(b)); got[0] != want {
		t.Errorf("signals %q, want %s first", got, want)
	}

	if err := localproxy.Stop(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := signals(t, dir, 2); !strings.HasPrefix(got[1], "TERM_") {
		t.Errorf("signals %q, want TERM second", got)
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "config.json"), PidFile: filepath.Join(dir, "pid")}
	// No pid file: the file is written, nothing signalled, no error.
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if _, err := localproxy.PID(o.PidFile); !errors.Is(err, localproxy.ErrNotRunning) {
		t.Errorf("PID without a file = %v", err)
	}
	// A stale pid file naming this very process (alive, but not holding the lock): no
	// signal may reach it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := os.WriteFile(o.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := localproxy.PID(o.PidFile); !errors.Is(err, localproxy.ErrNotRunning) || !strings.Contains(err.Error(), "stale") {
		t.Errorf("PID of a stale file = %v", err)
	}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if err := localproxy.Stop(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-hup:
		t.Fatalf("a stale pid file got its pid signalled: %v", s)
	default:
	}
}

func TestProcessGone(t *testing.T) {
	dir := t.TempDir()
	p := startStandIn(t, dir)
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "config.json"), PidFile: filepath.Join(dir, "pid")}
	if err := localproxy.Stop(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	_, _ = p.Wait()
	// The pid file stays behind, unlocked: a reload after the end is no error.
	if _, err := os.Stat(o.PidFile); err != nil {
		t.Fatal(err)
	}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if got := signals(t, dir, 1); len(got) != 1 {
		t.Errorf("signals after the end: %q", got)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "missing", "config.json"), PidFile: filepath.Join(dir, "pid")}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err == nil || !strings.Contains(err.Error(), "local_proxy config") {
		t.Fatalf("Configure into a missing directory = %v", err)
	}
	// A pid file whose holder wrote garbage: a clear error.
	f, err := os.Create(o.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("not-a-pid\n"); err != nil {
		t.Fatal(err)
	}
	// Held through another open file description, as another process would.
	g, err := os.Open(o.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := localproxy.PID(o.PidFile); err == nil || !strings.Contains(err.Error(), "is not a pid") {
		t.Errorf("PID of garbage = %v", err)
	}
}

type fakeUnits struct {
	state string
	calls []string
}

func (u *fakeUnits) ActiveState(_ context.Context, name string) (string, error) {
	u.calls = append(u.calls, "state "+name)
	return u.state, nil
}
func (u *fakeUnits) ReloadUnit(_ context.Context, name string) error {
	u.calls = append(u.calls, "reload "+name)
	return nil
}
func (u *fakeUnits) StopUnit(_ context.Context, name string) error {
	u.calls = append(u.calls, "stop "+name)
	return nil
}

// TestUnit: an active unit is reloaded and stopped through systemd, not signalled; an
// inactive one falls back to the pid file.
func TestUnit(t *testing.T) {
	dir := t.TempDir()
	startStandIn(t, dir)
	u := &fakeUnits{state: "active"}
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "config.json"), PidFile: filepath.Join(dir, "pid"), Unit: "local_proxy.service", Units: u}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if err := localproxy.Stop(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	want := "state local_proxy.service,reload local_proxy.service,state local_proxy.service,stop local_proxy.service"
	if got := strings.Join(u.calls, ","); got != want {
		t.Errorf("calls %s, want %s", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "signals")); len(b) != 0 {
		t.Errorf("the unit's process was signalled too: %s", b)
	}
	u.state = "inactive"
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if got := signals(t, dir, 1); !strings.HasPrefix(got[0], "HUP_") {
		t.Errorf("signals %q", got)
	}
}

type brokenUnits struct{ fakeUnits }

func (*brokenUnits) ActiveState(context.Context, string) (string, error) {
	return "", errors.New("bus gone")
}

// TestUnitStateUnknown: when systemd does not answer, the pid file is used.
func TestUnitStateUnknown(t *testing.T) {
	dir := t.TempDir()
	startStandIn(t, dir)
	o := localproxy.Options{ConfigPath: filepath.Join(dir, "config.json"), PidFile: filepath.Join(dir, "pid"), Unit: "local_proxy.service", Units: &brokenUnits{}}
	if err := localproxy.Configure(context.Background(), o, testSpec()); err != nil {
		t.Fatal(err)
	}
	if got := signals(t, dir, 1); !strings.HasPrefix(got[0], "HUP_") {
		t.Errorf("signals %q", got)
	}
}
