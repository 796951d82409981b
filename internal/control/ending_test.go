package control

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

func TestParseEndAction(t *testing.T) {
	for _, s := range []string{"stop", "poweroff", "none"} {
		if a, err := ParseEndAction(s); err != nil || string(a) != s {
			t.Errorf("ParseEndAction(%q) = %q, %v", s, a, err)
		}
	}
	for _, s := range []string{"", "Stop", "halt", "reboot"} {
		if _, err := ParseEndAction(s); err == nil {
			t.Errorf("ParseEndAction(%q) accepted", s)
		}
	}
}

// TestEndOf: what counts as an ended lifecycle, and its linger, as compute_ctl exits.
func TestEndOf(t *testing.T) {
	tests := []struct {
		name   string
		rec    state.Record
		linger time.Duration
		ended  bool
	}{
		{"terminated fast", state.Record{Status: state.Terminated, EndedFrom: state.TerminationPendingFast, HasRun: true}, EndLinger, true},
		{"terminated immediate", state.Record{Status: state.Terminated, EndedFrom: state.TerminationPendingImmediate, HasRun: true}, 0, true},
		{"terminated while empty, fast", state.Record{Status: state.Terminated, EndedFrom: state.TerminationPendingFast}, EndLinger, true},
		{"terminated while empty, immediate", state.Record{Status: state.Terminated, EndedFrom: state.TerminationPendingImmediate}, 0, true},
		{"failed start (init)", state.Record{Status: state.Failed, EndedFrom: state.Init}, EndLinger, true},
		{"failed start (bad config)", state.Record{Status: state.Failed, EndedFrom: state.ConfigurationPending}, EndLinger, true},
		{"failed final sync, fast", state.Record{Status: state.Failed, EndedFrom: state.TerminationPendingFast, HasRun: true}, EndLinger, true},
		{"failed final sync, immediate", state.Record{Status: state.Failed, EndedFrom: state.TerminationPendingImmediate, HasRun: true}, 0, true},
		{"postgres died while running", state.Record{Status: state.Failed, EndedFrom: state.Running, HasRun: true}, 0, false},
		{"failed reconfiguration", state.Record{Status: state.Failed, EndedFrom: state.Configuration, HasRun: true}, 0, false},
		{"running", state.Record{Status: state.Running, HasRun: true}, 0, false},
		{"termination pending", state.Record{Status: state.TerminationPendingFast, HasRun: true}, 0, false},
		{"empty", state.Record{Status: state.Empty}, 0, false},
	}
	for _, tt := range tests {
		linger, ended := endOf(tt.rec)
		if linger != tt.linger || ended != tt.ended {
			t.Errorf("%s: endOf = %s, %v; want %s, %v", tt.name, linger, ended, tt.linger, tt.ended)
		}
	}
}

// fakeEnder records the actions asked for.
type fakeEnder struct {
	err   error
	calls chan string
}

func newFakeEnder() *fakeEnder { return &fakeEnder{calls: make(chan string, 10)} }

func (e *fakeEnder) StopCompute(context.Context) error { e.calls <- "stop"; return e.err }
func (e *fakeEnder) PowerOff(context.Context) error    { e.calls <- "poweroff"; return e.err }

// fakeAfter is the linger's clock: each wait is reported on asked and ends when the test
// sends on fire.
type fakeAfter struct {
	asked chan time.Duration
	fire  chan time.Time
}

func newFakeAfter() *fakeAfter {
	return &fakeAfter{asked: make(chan time.Duration, 10), fire: make(chan time.Time)}
}

func (f *fakeAfter) after(d time.Duration) <-chan time.Time { f.asked <- d; return f.fire }

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// endRig is a rig with WatchEnd running.
type endRig struct {
	*rig
	ender *fakeEnder
	clock *fakeAfter
	log   *lockedLog
	stop  func()
}

func startEndWatch(t *testing.T, action EndAction, before func(r *rig)) *endRig {
	t.Helper()
	return startEndWatchErr(t, action, before, nil)
}

// startEndWatchErr is startEndWatch with an ender whose actions fail with err.
func startEndWatchErr(t *testing.T, action EndAction, before func(r *rig), err error) *endRig {
	t.Helper()
	log := &lockedLog{}
	r := newRig(t, func(d *Deps) { d.Logger = slog.New(slog.NewTextHandler(log, nil)) })
	if before != nil {
		before(r)
	}
	e := &endRig{rig: r, ender: newFakeEnder(), clock: newFakeAfter(), log: log}
	e.ender.err = err
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// WatchEnd takes the record it starts from before it returns: what follows is news.
	watch := r.ctl.WatchEnd(action, e.ender, e.clock.after)
	go func() {
		defer close(done)
		watch(ctx)
	}()
	e.stop = func() { cancel(); <-done }
	t.Cleanup(e.stop)
	return e
}

// run moves a fresh lifecycle to running through the lifecycle operations.
func (e *endRig) run() {
	e.t.Helper()
	if _, err := statetest.Reset(e.store); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.BeginInit(nil); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.MarkRunning(nil); err != nil {
		e.t.Fatal(err)
	}
}

func (e *endRig) terminate(immediate bool) {
	e.t.Helper()
	if _, _, err := e.store.BeginTermination(immediate); err != nil {
		e.t.Fatal(err)
	}
	if _, done, err := e.store.CompleteTermination(state.ActorAPI, nil); err != nil || !done {
		e.t.Fatalf("complete termination: %v %v", done, err)
	}
}

// waitLog waits until the log holds s (the test's deadline bounds it).
func (e *endRig) waitLog(s string) {
	e.t.Helper()
	for !strings.Contains(e.log.String(), s) {
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *endRig) noCall() {
	e.t.Helper()
	select {
	case c := <-e.ender.calls:
		e.t.Fatalf("unexpected action %q\n%s", c, e.log.String())
	default:
	}
}

func TestWatchEndFastTerminationLingers(t *testing.T) {
	e := startEndWatch(t, EndStop, nil)
	e.run()
	e.terminate(false)
	if d := <-e.clock.asked; d != EndLinger {
		t.Fatalf("linger %s, want %s", d, EndLinger)
	}
	e.noCall() // not before the linger ends
	e.clock.fire <- time.Time{}
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
	e.waitLog("post-termination action taken")
}

func TestWatchEndImmediateTerminationAtOnce(t *testing.T) {
	e := startEndWatch(t, EndPowerOff, nil)
	e.run()
	e.terminate(true)
	if c := <-e.ender.calls; c != "poweroff" {
		t.Fatalf("action %q, want poweroff", c)
	}
	select {
	case d := <-e.clock.asked:
		t.Fatalf("lingered %s after an immediate termination", d)
	default:
	}
}

func TestWatchEndFailedStart(t *testing.T) {
	e := startEndWatch(t, EndStop, nil)
	if _, err := statetest.Reset(e.store); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.BeginInit(nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Fail(state.ActorInit, "initdb: boom"); err != nil {
		t.Fatal(err)
	}
	if d := <-e.clock.asked; d != EndLinger {
		t.Fatalf("linger %s, want %s", d, EndLinger)
	}
	e.clock.fire <- time.Time{}
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
}

// A new lifecycle during the linger (the compute restarted) cancels the action.
func TestWatchEndNewLifecycleDuringLinger(t *testing.T) {
	e := startEndWatch(t, EndStop, nil)
	e.run()
	e.terminate(false)
	<-e.clock.asked
	if _, err := statetest.Reset(e.store); err != nil {
		t.Fatal(err)
	}
	e.clock.fire <- time.Time{}
	e.waitLog("a new lifecycle began during the linger")
	e.noCall()
	// The new lifecycle's own end is acted on.
	e.run()
	e.terminate(true)
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
}

// A record that had ended before the watch began is not acted on; the next lifecycle's
// end is, once.
func TestWatchEndIgnoresEarlierEnd(t *testing.T) {
	e := startEndWatch(t, EndStop, func(r *rig) {
		r.set(state.Terminated, func(rec *state.Record) { rec.EndedFrom = state.TerminationPendingImmediate })
	})
	if !strings.Contains(e.log.String(), "compute had ended before compute-api started") {
		t.Errorf("log:\n%s", e.log.String())
	}
	e.noCall()
	e.run()
	e.terminate(true)
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
	e.stop()
	e.noCall()
}

// A failure of a compute that ran is no end; none and a failing action are handled.
func TestWatchEndNotAnEnd(t *testing.T) {
	e := startEndWatch(t, EndStop, nil)
	e.run()
	if _, _, err := e.store.Fail(state.ActorStopHook, "postgres died"); err != nil {
		t.Fatal(err)
	}
	// The watcher has seen the failed record once it has seen a later one; end a new
	// lifecycle and expect exactly its action.
	e.run()
	e.terminate(true)
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
	e.stop()
	e.noCall()
	if strings.Count(e.log.String(), "compute ended: post-termination action") != 1 {
		t.Errorf("log:\n%s", e.log.String())
	}
}

func TestWatchEndActionFails(t *testing.T) {
	e := startEndWatchErr(t, EndPowerOff, nil, errors.New("Operation refused"))
	e.run()
	e.terminate(true)
	<-e.ender.calls
	e.waitLog(`msg="post-termination action failed" action=poweroff`)
}

func TestWatchEndNone(t *testing.T) {
	r := newRig(t)
	done := make(chan struct{})
	go func() {
		// With none, the watch returns at once instead of watching.
		r.ctl.WatchEnd(EndNone, newFakeEnder(), nil)(context.Background())
		close(done)
	}()
	<-done
}

// TestWatchEndWaitsForTerminateToAnswer: the stop hook records terminated before the
// Postgres stop job (and so /terminate) is done; the action waits for /terminate to
// answer, as compute_ctl answers before it exits.
func TestWatchEndWaitsForTerminateToAnswer(t *testing.T) {
	e := startEndWatch(t, EndStop, nil)
	release := make(chan struct{})
	e.units.hook = func() error {
		if _, _, err := e.store.CompleteTermination(state.ActorStopHook, nil); err != nil {
			return err
		}
		<-release // the rest of the stop job
		return nil
	}
	e.run()
	answered := make(chan error, 1)
	go func() {
		_, err := e.ctl.Terminate(context.Background(), true)
		answered <- err
	}()
	e.waitLog("waiting for /terminate to answer first")
	e.noCall()
	close(release)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if c := <-e.ender.calls; c != "stop" {
		t.Fatalf("action %q, want stop", c)
	}
}

// ctxEnder is an ender whose stop is answered only after the caller's context ended,
// with the error of a connection closed by the shutdown the stop began.
type ctxEnder struct{ cancel context.CancelFunc }

func (e ctxEnder) StopCompute(ctx context.Context) error {
	e.cancel()
	<-ctx.Done()
	return errors.New("the connection to systemd is lost")
}
func (e ctxEnder) PowerOff(context.Context) error { return nil }

// TestWatchEndStopEndsTheWatcher: the stop reaches compute-api before systemd's answer:
// that is the action taken, not a failure.
func TestWatchEndStopEndsTheWatcher(t *testing.T) {
	log := &lockedLog{}
	r := newRig(t, func(d *Deps) { d.Logger = slog.New(slog.NewTextHandler(log, nil)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	watch := r.ctl.WatchEnd(EndStop, ctxEnder{cancel}, nil)
	go func() {
		defer close(done)
		watch(ctx)
	}()
	e := &endRig{rig: r, log: log}
	e.run()
	e.terminate(true)
	<-done
	if out := log.String(); !strings.Contains(out, "post-termination action taken") || strings.Contains(out, "level=ERROR") {
		t.Errorf("log:\n%s", out)
	}
}
