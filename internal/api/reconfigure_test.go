package api

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

// configureUnit does what compute-configure does on a restart: configuration, then
// running (or failed with msg).
func configureUnit(store *state.Store, failMsg string) func() error {
	return func() error {
		if _, err := store.BeginReconfiguration(); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		if failMsg != "" {
			_, _, err := store.Fail(state.ActorConfigure, failMsg)
			return err
		}
		_, err := store.MarkRunning(nil)
		return err
	}
}

func TestReconfigureRunning(t *testing.T) {
	h := newHarness(t)
	h.moveTo(state.ConfigurationPending, state.Init, state.Running)
	h.units.reconfigure = configureUnit(h.store, "")
	resp := h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	w := <-resp
	expect(t, w, http.StatusOK, "")
	if h.units.reconfigures != 1 || h.pending.count() != 1 {
		t.Fatalf("reconfigures %d, pending writes %d", h.units.reconfigures, h.pending.count())
	}
	if st := h.status(); st != state.Running {
		t.Fatalf("status %s", st)
	}
}

func TestReconfigureFailsThenRecovers(t *testing.T) {
	h := newHarness(t)
	h.moveTo(state.ConfigurationPending, state.Init, state.Running)
	h.units.reconfigure = configureUnit(h.store, "apply spec: role x: boom")
	h.units.pgActive = true
	w := <-h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	expect(t, w, http.StatusInternalServerError, `compute configuration failed: "apply spec: role x: boom"`)
	if st := h.status(); st != state.Failed {
		t.Fatalf("status %s, want failed", st)
	}
	// The way out: a good config while Postgres runs.
	h.units.reconfigure = configureUnit(h.store, "")
	w = <-h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	expect(t, w, http.StatusOK, "")
	rec, _ := h.store.Load()
	if rec.Status != state.Running || rec.Error != nil {
		t.Fatalf("after recovery: %s %v", rec.Status, rec.Error)
	}
}

func TestReconfigureUnitError(t *testing.T) {
	h := newHarness(t)
	h.moveTo(state.ConfigurationPending, state.Init, state.Running)
	h.units.reconfigureErr = errors.New(`restart compute-configure.service: job result "failed"`)
	w := <-h.async(context.Background(), "POST", "/configure", configBody(neonSpec), withToken(h.computeToken()), jsonBody())
	expect(t, w, http.StatusInternalServerError, `compute configuration failed: "reconfigure: restart compute-configure.service: job result \"failed\""`)
	if st := h.status(); st != state.Failed {
		t.Fatalf("status %s, want failed", st)
	}
}
