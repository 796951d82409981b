package vmmonitord

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/vmmonitor"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/policy"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// calls records the side effects of the fakes, in order.
type calls struct {
	mu sync.Mutex
	l  []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.l = append(c.l, fmt.Sprintf(format, args...))
}

func (c *calls) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.l
	c.l = nil
	return l
}

// fakeCache records; it fails with *err when err is set.
type fakeCache struct {
	c   *calls
	err *error
}

func (f fakeCache) Set(_ context.Context, b uint64) (filecache.Result, error) {
	f.c.add("cache %d MiB", b/mib)
	if f.err != nil && *f.err != nil {
		return filecache.Result{}, *f.err
	}
	return filecache.Result{Applied: true, Bytes: b}, nil
}
func (f fakeCache) Close() { f.c.add("cache closed") }

// fakeLimit records; it fails with *err when err is set.
type fakeLimit struct {
	c   *calls
	err *error
}

func (f fakeLimit) SetMemoryHigh(_ context.Context, b uint64) error {
	f.c.add("memory high %d MiB", b/mib)
	if f.err != nil {
		return *f.err
	}
	return nil
}

type fakeWatcher struct {
	c    *calls
	mu   sync.Mutex
	snap cgroup.Snapshot
	thr  uint64
	reqs chan struct{}
}

func (w *fakeWatcher) Last() cgroup.Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}
func (w *fakeWatcher) SetThreshold(b uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.add("threshold %d", b)
	w.thr = b
}
func (w *fakeWatcher) Threshold() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.thr
}
func (w *fakeWatcher) UpscaleRequests() <-chan struct{} { return w.reqs }

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

type adapterSetup struct {
	c   *calls
	w   *fakeWatcher
	a   *Adapter
	off bool
	err error
	// cacheErr and limitErr make the file cache and the limit fail.
	cacheErr, limitErr error
}

func newAdapterSetup(t *testing.T) *adapterSetup {
	s := &adapterSetup{c: &calls{}}
	s.w = &fakeWatcher{c: s.c, reqs: make(chan struct{}), snap: cgroup.Snapshot{At: t0, History: cgroup.History{Samples: 5, AvgNonReclaimable: 50 * mib}}}
	log, _ := newLog()
	s.a = NewAdapter(AdapterOptions{
		Policy: policy.Options{
			Watcher:  s.w,
			Limit:    fakeLimit{c: s.c, err: &s.limitErr},
			MemTotal: func() (uint64, error) { return 4 * gib, nil },
			Now:      func() time.Time { return t0 },
		},
		FileCache:           fakeCache{c: s.c, err: &s.cacheErr},
		LFCResizingDisabled: func() (bool, error) { return s.off, s.err },
		Log:                 log,
	})
	return s
}

func expectCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("side effects\n got %q\nwant %q", got, want)
	}
}

// TestAdapter: Reset starts a policy for the machine's memory, with the file cache or
// without it as the spec says at that moment; the allocations reach the policy as they
// came; nothing is done before a Reset.
func TestAdapter(t *testing.T) {
	ctx := context.Background()
	s := newAdapterSetup(t)
	if s.a.UpscaleRequests() != (<-chan struct{})(s.w.reqs) {
		t.Error("UpscaleRequests is not the watcher's")
	}
	if err := s.a.Upscale(ctx, vmmonitor.Allocation{CPU: 1, Mem: gib}); err == nil {
		t.Error("Upscale before any Reset succeeded")
	}
	if _, _, err := s.a.Downscale(ctx, vmmonitor.Allocation{CPU: 1, Mem: gib}); err == nil {
		t.Error("Downscale before any Reset succeeded")
	}
	expectCalls(t, s.c.take())

	// 4 GiB MemTotal: the limit at it, the cache at 0.75 of it, the threshold at 0.85.
	if err := s.a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, s.c.take(), "memory high 4096 MiB", "cache 3072 MiB", "threshold 3650722201")

	// The agent's 512 MiB: usable 412 MiB (the 100 MiB sys buffer off); the cache
	// (412 - 256) / 1.1 MiB, below 0.75 x 412; the threshold 0.85 x 412 MiB. The limit
	// stays at the 4 GiB applied: an upscale never lowers it.
	if err := s.a.Upscale(ctx, vmmonitor.Allocation{CPU: 0.25, Mem: 512 * mib}); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, s.c.take(), "cache 141 MiB", "threshold 367211315")

	// Down to 384 MiB (usable 284) with 50 MiB in use: the cache (284 - 256) / 1.1 MiB
	// first, then the limit, then the threshold 0.85 x 284 MiB.
	ok, status, err := s.a.Downscale(ctx, vmmonitor.Allocation{CPU: 0.25, Mem: 384 * mib})
	if !ok || err != nil || status != "set file cache size to 25 MiB; set cgroup memory threshold from 350.2 MiB to 241.4 MiB, of new total 284 MiB" {
		t.Errorf("Downscale = %v %q %v", ok, status, err)
	}
	expectCalls(t, s.c.take(), "cache 25 MiB", "memory high 284 MiB", "threshold 253126246")

	// A new connection after the spec turned resizing off: no cache at all (its
	// connection closed), in the start and in the answers.
	s.off = true
	if err := s.a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, s.c.take(), "cache closed", "memory high 4096 MiB", "threshold 3650722201")
	ok, status, err = s.a.Downscale(ctx, vmmonitor.Allocation{CPU: 0.25, Mem: 384 * mib})
	if !ok || err != nil || strings.Contains(status, "file cache") {
		t.Errorf("Downscale without the cache = %v %q %v", ok, status, err)
	}
	s.c.take()

	// A spec that cannot be read: resized (with a warning).
	s.off, s.err = true, errors.New("applied config: invalid spec")
	if err := s.a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, s.c.take(), "memory high 4096 MiB", "cache 3072 MiB", "threshold 3650722201")
	// The next connection: the limit applied (4 GiB) is not set again.
	if err := s.a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, s.c.take(), "cache 3072 MiB", "threshold 3650722201")

	// What was applied outlives the connection: a new connection's "upscale" below the
	// allocation applied last (the 384 MiB downscale) is refused.
	if err := s.a.Upscale(ctx, vmmonitor.Allocation{Mem: 256 * mib}); err == nil || !strings.Contains(err.Error(), "below the allocation applied last") {
		t.Errorf("Upscale below the last allocation on a new connection = %v", err)
	}
	expectCalls(t, s.c.take())
}

// TestAdapterResetWarns: a Reset whose limit and file cache cannot be set (systemd
// refuses, Postgres is down) succeeds, so the connection stays and answers health
// checks; the decisions that need them report the error.
func TestAdapterResetWarns(t *testing.T) {
	ctx := context.Background()
	s := newAdapterSetup(t)
	s.cacheErr, s.limitErr = errors.New("connection refused"), errors.New("access denied")
	if err := s.a.Reset(ctx); err != nil {
		t.Fatalf("Reset with a failing cache and limit = %v, want nil", err)
	}
	expectCalls(t, s.c.take(), "memory high 4096 MiB", "cache 3072 MiB", "threshold 3650722201")
	ok, _, err := s.a.Downscale(ctx, vmmonitor.Allocation{CPU: 0.25, Mem: 384 * mib})
	if ok || err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Downscale with the cache failing = %v %v", ok, err)
	}
	s.cacheErr = nil
	if err := s.a.Upscale(ctx, vmmonitor.Allocation{Mem: 8 * gib}); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("Upscale with the limit failing = %v", err)
	}
}

// TestAdapterResetFails: a Reset that fails leaves no policy behind: the connection's
// calls are refused rather than sent to the previous connection's policy.
func TestAdapterResetFails(t *testing.T) {
	ctx := context.Background()
	s := newAdapterSetup(t)
	if err := s.a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	s.a.o.Policy.MemTotal = func() (uint64, error) { return 0, errors.New("no /proc/meminfo") }
	if err := s.a.Reset(ctx); err == nil || !strings.Contains(err.Error(), "no /proc/meminfo") {
		t.Fatalf("Reset = %v", err)
	}
	if err := s.a.Upscale(ctx, vmmonitor.Allocation{Mem: gib}); err == nil {
		t.Error("Upscale after a failed Reset succeeded")
	}
}

func TestAppliedSpecDisablesLFC(t *testing.T) {
	dir := t.TempDir()
	read := AppliedSpecDisablesLFC(dir)
	if off, err := read(); off || err != nil {
		t.Errorf("no applied config: %v %v", off, err)
	}
	write := func(s string) {
		if err := os.WriteFile(paths.AppliedConfigFile(dir), []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	const spec = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {"roles": [], "databases": []}%s}}`
	for _, c := range []struct {
		extra string
		off   bool
	}{
		{``, false},
		{`, "disable_lfc_resizing": false`, false},
		{`, "disable_lfc_resizing": true`, true},
	} {
		write(fmt.Sprintf(spec, c.extra))
		if off, err := read(); off != c.off || err != nil {
			t.Errorf("spec with %q: %v %v", c.extra, off, err)
		}
	}
	write(`{"spec": {`)
	if _, err := read(); err == nil || !strings.Contains(err.Error(), filepath.Base(paths.AppliedConfigFile(dir))) {
		t.Errorf("a broken applied config: %v", err)
	}
}
