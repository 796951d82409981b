package compute

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
	"github.com/computetools/compute-tools/internal/warmup"
)

// fakeWarmup stands in for warmup.Run: it tells when it began, holds until its context
// ends (a warm-up that takes long), then until released (its clean-up).
type fakeWarmup struct {
	began, aborted, release chan struct{}
}

func newFakeWarmup() *fakeWarmup {
	return &fakeWarmup{began: make(chan struct{}), aborted: make(chan struct{}), release: make(chan struct{})}
}

func (f *fakeWarmup) run(ctx context.Context) warmup.Result {
	close(f.began)
	<-ctx.Done()
	close(f.aborted)
	<-f.release
	return warmup.Result{Outcome: warmup.Aborted}
}

// waitingSource is the wait for POST /configure of a fresh empty record, with w.
func waitingSource(t *testing.T, w *warmer) (waitForConfigure, *state.Store, chan struct{}) {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := statetest.Reset(st); err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{}, 1)
	return waitForConfigure{store: st, wake: wake, recheck: time.Hour, path: filepath.Join(st.Dir(), "config.pending.json"),
		status: func(string) {}, warm: w}, st, wake
}

// A POST /configure that comes during the warm-up is taken at once: the warm-up is
// aborted and the config returned without waiting for the warm-up's clean-up, which
// finish waits for. A /terminate aborts it the same way.
func TestWaitForConfigureAbortsWarmup(t *testing.T) {
	for _, to := range []state.Status{state.ConfigurationPending, state.TerminationPendingFast} {
		t.Run(string(to), func(t *testing.T) {
			f := newFakeWarmup()
			w := &warmer{pgdata: "/nonexistent/pgdata", run: f.run}
			src, st, wake := waitingSource(t, w)
			type result struct {
				got *acquired
				err error
			}
			done := make(chan result, 1)
			go func() {
				got, err := src.obtain(context.Background(), state.Record{Status: state.Empty})
				done <- result{got, err}
			}()
			<-f.began
			if to == state.ConfigurationPending {
				if err := os.WriteFile(src.path, []byte(srcConfig), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			statetest.MustSet(t, st, to, nil)
			wake <- struct{}{}
			r := <-done // the warm-up's clean-up is still held (f.release)
			<-f.aborted
			if to == state.ConfigurationPending {
				if r.err != nil || r.got == nil || string(r.got.Raw) != srcConfig {
					t.Fatalf("got %+v, %v", r.got, r.err)
				}
			} else if r.err == nil {
				t.Fatal("a /terminate gave a config")
			}
			finished := make(chan struct{})
			go func() { w.finish(); close(finished) }()
			select {
			case <-finished:
				t.Fatal("finish did not wait for the warm-up's clean-up")
			case <-time.After(50 * time.Millisecond):
			}
			close(f.release)
			<-finished
		})
	}
}

// A start with a config at hand (here the config file) never warms up; it removes a
// warm-up directory a crash left, in the background. A warmer that is off does nothing.
func TestNoWarmupWithConfig(t *testing.T) {
	root := t.TempDir()
	pgdataPath := filepath.Join(root, "pgdata")
	leftover := pgdata.Warmup(pgdataPath).Path
	if err := os.MkdirAll(filepath.Join(leftover, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	ran := false
	w := &warmer{pgdata: pgdataPath, run: func(context.Context) warmup.Result { ran = true; return warmup.Result{} }}
	cfg := Settings{StateDir: root, ConfigFile: writeFile(t, srcConfig), PGData: pgdataPath}
	st, err := state.Open(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := firstConfig(context.Background(), state.Record{Status: state.Empty}, configSources(cfg, &Deps{Store: st}, nil, w))
	if err != nil || got == nil {
		t.Fatalf("config: %+v, %v", got, err)
	}
	w.sweep()
	w.finish()
	if ran {
		t.Error("a start with a config file warmed up")
	}
	if _, err := os.Lstat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the leftover warm-up directory is still there: %v", err)
	}

	off := newWarmer(Settings{PGData: pgdataPath, Warmup: false}, nil)
	if off.enabled() {
		t.Error("--no-warmup: the warmer is on")
	}
	off.start(context.Background())
	off.finish() // nothing started: returns at once
	if on := newWarmer(Settings{PGData: pgdataPath, Warmup: true}, nil); !on.enabled() {
		t.Error("--warmup: the warmer is off")
	}
}

// With the real warm-up and PostgreSQL 15: a POST /configure during the warm-up is
// taken, and once finish returns the throwaway cluster and its processes are gone.
func TestWaitForConfigureRealWarmup(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	bin := os.Getenv("PGBIN_DIR")
	if bin == "" {
		bin = pgtest.DefaultBinDir
	}
	pgdataPath := filepath.Join(pgtest.OwnedDir(t, "compute-warmup-"), "pgdata")
	w := newWarmer(Settings{PGData: pgdataPath, PGBin: filepath.Join(bin, "postgres"), OSUser: pgtest.OSUser, Warmup: true}, nil)
	src, st, wake := waitingSource(t, w)
	done := make(chan error, 1)
	go func() {
		got, err := src.obtain(context.Background(), state.Record{Status: state.Empty})
		if err == nil && (got == nil || string(got.Raw) != srcConfig) {
			err = errors.New("not the config sent")
		}
		done <- err
	}()
	// The warm-up has begun once its directory exists (initdb made it).
	dir := pgdata.Warmup(pgdataPath).Path
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the warm-up never began")
		}
	}
	if err := os.WriteFile(src.path, []byte(srcConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	statetest.MustSet(t, st, state.ConfigurationPending, nil)
	wake <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.finish()
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the warm-up directory is still there: %v", err)
	}
	if procs := childrenNamed("postgres", "initdb"); len(procs) > 0 {
		t.Errorf("warm-up processes left: %v", procs)
	}
}

// childrenNamed lists this process's children whose command is one of names.
func childrenNamed(names ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		comm, rest := s[open+1:closing], strings.Fields(s[closing+1:])
		if len(rest) < 2 || rest[0] == "Z" || rest[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		for _, n := range names {
			if comm == n {
				out = append(out, e.Name()+" "+comm)
			}
		}
	}
	return out
}
