package vmmonitord

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/policy"
)

// tickClock drives the real watcher: the test feeds its ticks, unbuffered, so that when
// a tick is taken the sample of the one before is complete.
type tickClock struct {
	mu    sync.Mutex
	now   time.Time
	ticks chan time.Time
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *tickClock) NewTicker(time.Duration) cgroup.Ticker { return c }
func (c *tickClock) C() <-chan time.Time                   { return c.ticks }
func (c *tickClock) Stop()                                 {}

// samples makes the watcher take n samples and waits until they are all taken.
func (c *tickClock) samples(n int) {
	for range n + 1 {
		c.mu.Lock()
		c.now = c.now.Add(100 * time.Millisecond)
		now := c.now
		c.mu.Unlock()
		c.ticks <- now
	}
}

// TestWiring runs the vm-monitor as Main wires it, through Run and the protocol, with the
// real pieces but two: the cgroup is a directory of files the test writes (this machine
// has no cgroup v2 memory controller; the system test has the real one where it exists)
// and the memory limit is recorded instead of set through systemd (the system test sets
// it). The file cache is the real client on PostgreSQL 15 with the neon settings as
// placeholders (vanilla PostgreSQL with a neon spec's settings), which it leaves alone,
// as the statuses say; the agent is agenttest, over TCP.
func TestWiring(t *testing.T) {
	inst := pgtest.Start(t)
	conf, err := os.OpenFile(filepath.Join(inst.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.WriteString("neon.file_cache_size_limit = '128MB'\nneon.max_file_cache_size = '2GB'\n"); err != nil {
		t.Fatal(err)
	}
	conf.Close()
	inst.Reload(t)
	ctx := context.Background()
	log, logs := newLog()
	// The reload is asynchronous: wait until the server knows the settings.
	probe := filecache.New(inst.Connstr(), log)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, err := probe.Probe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Known && s.HaveMax {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the placeholders never appeared: %+v", s)
		}
	}
	probe.Close()

	cgdir := t.TempDir()
	anon := func(b uint64) {
		if err := os.WriteFile(filepath.Join(cgdir, "memory.stat"), fmt.Appendf(nil, "anon %d\nactive_anon %d\ninactive_anon 0\nfile 0\n", b, b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	anon(400 * mib)
	clock := &tickClock{now: t0, ticks: make(chan time.Time)}
	watcher := cgroup.NewWatcher(cgroup.FixedDir(cgdir), cgroup.Options{Clock: clock, Log: log})

	stateDir := t.TempDir()
	cache := filecache.New(inst.Connstr(), log)
	defer cache.Close()
	c := &calls{}
	a := NewAdapter(AdapterOptions{
		Policy: policy.Options{
			Watcher: watcher, Limit: fakeLimit{c: c}, Log: log, Now: clock.Now,
			MemTotal: func() (uint64, error) { return 4 * gib, nil },
		},
		FileCache:           cache,
		LFCResizingDisabled: AppliedSpecDisablesLFC(stateDir),
		Log:                 log,
	})
	ln := listenTCP(t)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Deps{
			Listeners: []net.Listener{ln}, Policy: a, Log: log,
			Background: []func(context.Context){func(ctx context.Context) { _ = watcher.Run(ctx) }},
		})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	clock.samples(2)

	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	agent, err := agenttest.Dial(actx, wsURL(ln), agenttest.Options{})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, logs)
	}
	defer agent.Close()
	if err := agent.HealthCheck(actx); err != nil {
		t.Fatal(err)
	}
	// The connection's start sized everything for 4 GiB; the cache, a placeholder, is
	// left alone (its settings were read through a session named vm-monitor).
	expectCalls(t, c.take(), "memory high 4096 MiB")
	if got := autoConf(t, inst); strings.Contains(got, "neon") {
		t.Errorf("postgresql.auto.conf after the connection's start:\n%s", got)
	}
	if n := vmMonitorSessions(t, inst, 1); n != 1 {
		t.Errorf("%d sessions with application_name vm-monitor, want 1", n)
	}

	// 400 MiB in use is below the 4 GiB threshold: no request. The agent grants 512 MiB:
	// the threshold falls to 350.2 MiB, and the next sample asks for more; the limit
	// stays at the 4 GiB applied (an upscale never lowers it).
	if err := agent.NotifyUpscale(actx, 0.25, 512*mib); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, c.take())
	select {
	case id := <-agent.UpscaleRequests():
		t.Fatalf("upscale request %d before any sample over the threshold", id)
	default:
	}
	clock.samples(1)
	select {
	case id := <-agent.UpscaleRequests():
		if id%2 != 1 {
			t.Errorf("upscale request id %d is not the monitor's (odd)", id)
		}
	case <-actx.Done():
		t.Fatalf("no upscale request under pressure\n%s", logs)
	}

	// A downscale to 512 MiB while 400 MiB are in use: denied, with the figures.
	ok, status, err := agent.RequestDownscale(actx, 0.25, 512*mib)
	if ok || err != nil || status != "calculated memory threshold too low: 350.2 MiB (new threshold) < 400 (current usage) + 100 (downscale buffer)" {
		t.Errorf("downscale under pressure = %v %q %v", ok, status, err)
	}
	// Freed: the average falls once five new samples are in, and the same request is
	// approved; the cache is not resized (a placeholder), as the status says.
	anon(20 * mib)
	clock.samples(5)
	ok, status, err = agent.RequestDownscale(actx, 0.25, 512*mib)
	if !ok || err != nil || status != "file cache not resized: neon.file_cache_size_limit is only a placeholder here (the neon extension's library is not loaded), so resizing it would change nothing; set cgroup memory threshold from 350.2 MiB to 350.2 MiB, of new total 412 MiB" {
		t.Errorf("downscale once freed = %v %q %v", ok, status, err)
	}
	expectCalls(t, c.take(), "memory high 412 MiB")
	if got := autoConf(t, inst); strings.Contains(got, "neon") {
		t.Errorf("postgresql.auto.conf after the downscale:\n%s", got)
	}

	// The spec turns LFC resizing off: the next connection leaves the cache alone and
	// closes its session.
	applied := `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {"roles": [], "databases": []}, "disable_lfc_resizing": true}}`
	if err := os.WriteFile(paths.AppliedConfigFile(stateDir), []byte(applied), 0o640); err != nil {
		t.Fatal(err)
	}
	agent2, err := agenttest.Dial(actx, wsURL(ln), agenttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer agent2.Close()
	ok, status, err = agent2.RequestDownscale(actx, 0.25, 512*mib)
	if !ok || err != nil || status != "set cgroup memory threshold from 3481.6 MiB to 350.2 MiB, of new total 412 MiB" {
		t.Errorf("downscale without LFC resizing = %v %q %v", ok, status, err)
	}
	if got := autoConf(t, inst); strings.Contains(got, "neon") {
		t.Errorf("postgresql.auto.conf changed with resizing off:\n%s", got)
	}
	if n := vmMonitorSessions(t, inst, 0); n != 0 {
		t.Errorf("%d sessions with application_name vm-monitor while resizing is off, want 0", n)
	}
}

func autoConf(t *testing.T, inst *pgtest.Instance) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(inst.DataDir, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// vmMonitorSessions counts the server's sessions named vm-monitor, waiting a little for
// the count to be want (a closed session takes a moment to go).
func vmMonitorSessions(t *testing.T, inst *pgtest.Instance, want int) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, inst.Connstr(), "vmmonitord-test")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", filecache.AppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == want || time.Now().After(deadline) {
			return n
		}
	}
}
