package control

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/logx/logxtest"
	"github.com/computetools/compute-tools/internal/state"
)

// Each lifecycle move the API makes logs its milestone once, with the MESSAGE_ID; a
// move another actor makes (the stop hook's terminated) is that actor's to log.
func TestMilestones(t *testing.T) {
	withLog := func(t *testing.T) (*rig, *logxtest.Recorder) {
		log, h := logxtest.NewRecorder()
		return newRig(t, func(d *Deps) { d.Logger = log }), h
	}
	want := func(t *testing.T, h *logxtest.Recorder, exp map[logx.MessageID]int) {
		t.Helper()
		n, lv := h.Milestones()
		if !maps.Equal(n, exp) {
			t.Errorf("milestones %v, want %v", n, exp)
		}
		for id := range n {
			if lv[id] != id.Level() {
				t.Errorf("%s logged at %s", id, lv[id])
			}
		}
	}
	t.Run("config accepted", func(t *testing.T) {
		r, h := withLog(t)
		done := r.configureAsync(context.Background(), "c")
		r.waitStatus(state.ConfigurationPending)
		r.set(state.Init, nil)
		r.set(state.Running, nil)
		if res := <-done; res.err != nil {
			t.Fatal(res.err)
		}
		// Running is compute-init's milestone, not the API's.
		want(t, h, map[logx.MessageID]int{logx.MsgConfigAccepted: 1})
	})
	t.Run("reconfiguration cannot start", func(t *testing.T) {
		r, h := withLog(t)
		r.set(state.Running, nil)
		r.units.reconfigureErr = errors.New("job failed")
		<-r.configureAsync(context.Background(), "c")
		want(t, h, map[logx.MessageID]int{logx.MsgConfigAccepted: 1, logx.MsgFailed: 1})
	})
	t.Run("terminated by the API", func(t *testing.T) {
		r, h := withLog(t)
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "standalone", "primary" })
		if _, err := r.ctl.Terminate(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		want(t, h, map[logx.MessageID]int{logx.MsgTerminated: 1})
		// Already terminated: no new occurrence.
		if _, err := r.ctl.Terminate(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		want(t, h, map[logx.MessageID]int{logx.MsgTerminated: 1})
	})
	t.Run("terminated by the stop hook", func(t *testing.T) {
		r, h := withLog(t)
		r.set(state.Running, func(rec *state.Record) { rec.Storage, rec.Mode = "neon", "primary" })
		lsn := testLSN
		r.units.hook = func() error {
			_, _, err := r.store.CompleteTermination(state.ActorStopHook, &lsn)
			return err
		}
		if _, err := r.ctl.Terminate(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		want(t, h, map[logx.MessageID]int{})
	})
	t.Run("termination fails", func(t *testing.T) {
		r, h := withLog(t)
		r.set(state.Running, nil)
		r.units.stopErr = errors.New("job failed")
		if _, err := r.ctl.Terminate(context.Background(), false); err == nil {
			t.Fatal("Terminate succeeded")
		}
		want(t, h, map[logx.MessageID]int{logx.MsgFailed: 1})
	})
}
