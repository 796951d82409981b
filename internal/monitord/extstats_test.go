package monitord

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// runExtStats runs the monitor on a running compute of mode with a counting collector.
func runExtStats(t *testing.T, mode spec.ModeType, seed func(*state.Record)) (*state.Store, *atomic.Int64) {
	t.Helper()
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	waker := &statetest.Waker{}
	store.OnChange = func(state.Record) { waker.Notify() }
	statetest.MustSet(t, store, state.Running, func(r *state.Record) {
		r.Mode = mode
		if seed != nil {
			seed(r)
		}
	})
	var calls atomic.Int64
	collect := func(context.Context) (extstats.Stats, error) {
		calls.Add(1)
		return extstats.Stats{Databases: 2, Extensions: []extstats.Extension{{Name: "plpgsql", Version: "1.0", NDatabases: 2, OwnedBySuperuser: extstats.Superuser}}}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	pg := &fakePG{}
	go func() {
		done <- Run(ctx, Settings{StateDir: t.TempDir(), Recheck: time.Hour, ExtStatsStartDelay: 10 * time.Millisecond},
			Deps{Store: store, Subscribe: waker.Subscribe, Connect: pg.connect, CollectExtensions: collect,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return store, &calls
}

// A primary collects shortly after running and the record holds the collection.
func TestExtStatsPublishedForAPrimary(t *testing.T) {
	store, calls := runExtStats(t, spec.ModeTypePrimary, nil)
	rec := waitRecord(t, store, "installed extensions published", func(r state.Record) bool { return r.InstalledExtensions != nil })
	if got := rec.InstalledExtensions; got.Databases != 2 || len(got.Extensions) != 1 || got.Extensions[0].Name != "plpgsql" || got.CollectedAt.IsZero() {
		t.Errorf("published %+v", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d collections, want 1 (the next is two base intervals later)", n)
	}
}

// A replica does not collect at start (the reference collects at a primary's start
// only), and a monitor that finds a recent collection in the record keeps its schedule.
func TestExtStatsNotAtStart(t *testing.T) {
	for name, tc := range map[string]struct {
		mode spec.ModeType
		seed func(*state.Record)
	}{
		"replica": {spec.ModeTypeReplica, nil},
		"restarted primary": {spec.ModeTypePrimary, func(r *state.Record) {
			r.InstalledExtensions = &extstats.Stats{CollectedAt: time.Now().UTC()}
		}},
	} {
		t.Run(name, func(t *testing.T) {
			store, calls := runExtStats(t, tc.mode, tc.seed)
			waitRecord(t, store, "monitoring", func(r state.Record) bool { return r.LastActive != nil })
			time.Sleep(300 * time.Millisecond)
			if n := calls.Load(); n != 0 {
				t.Errorf("%d collections at start", n)
			}
		})
	}
}

// A collection that ends after the compute began a new lifecycle is not written into it.
func TestExtStatsStayInTheirLifecycle(t *testing.T) {
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec := statetest.MustSet(t, store, state.Running, nil)
	publish := publishExtStats(store, rec.StartTime)
	if err := publish(context.Background(), extstats.Stats{Databases: 1}); err != nil {
		t.Fatal(err)
	}
	if r, _ := store.Load(); r.InstalledExtensions == nil || r.InstalledExtensions.Databases != 1 {
		t.Fatalf("not published: %+v", r.InstalledExtensions)
	}
	time.Sleep(2 * time.Millisecond) // a new start_time
	if _, err := statetest.Reset(store); err != nil {
		t.Fatal(err)
	}
	if err := publish(context.Background(), extstats.Stats{Databases: 2}); !errors.Is(err, errOtherLifecycle) {
		t.Errorf("publish into a new lifecycle = %v", err)
	}
	if r, _ := store.Load(); r.InstalledExtensions != nil {
		t.Errorf("the old lifecycle's collection is in the new record: %+v", r.InstalledExtensions)
	}
}
