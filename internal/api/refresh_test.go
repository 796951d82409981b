package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// POST /refresh_configuration on the internal port: 200 with an empty body when the
// refresh is requested (the refresh runs on), nothing to do in init, compute_ctl's 500
// in a status that allows none. A control plane that cannot be reached sends the refresh
// back to pending.
func TestRefreshConfigurationRoute(t *testing.T) {
	fetched := make(chan struct{}, 4)
	h := newHarness(t, func(c *harnessConfig) {
		c.ctl.FetchConfig = func(ctx context.Context) (*spec.ComputeConfig, error) {
			fetched <- struct{}{}
			return nil, context.DeadlineExceeded
		}
	})
	statetest.MustSet(t, h.store, state.Running, nil)
	w := h.do(h.srv.Internal(), "POST", "/refresh_configuration", "")
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Fatalf("running: %d %q", w.Code, w.Body)
	}
	<-fetched
	// Back to pending, with the reason, once the refresh gave up.
	wake, cancel := h.waker.Subscribe()
	defer cancel()
	rec, err := h.store.Wait(context.Background(), wake, 50*time.Millisecond, func(r state.Record) bool {
		return r.Status == state.RefreshConfigurationPending && r.Error != nil
	})
	if err != nil || !strings.Contains(*rec.Error, "refresh configuration: context deadline exceeded") {
		t.Fatalf("after the refresh: %+v %v", rec, err)
	}

	statetest.MustSet(t, h.store, state.Init, nil)
	if w := h.do(h.srv.Internal(), "POST", "/refresh_configuration", ""); w.Code != 200 || h.status() != state.Init {
		t.Fatalf("init: %d, %s", w.Code, h.status())
	}

	statetest.MustSet(t, h.store, state.Empty, nil)
	w = h.do(h.srv.Internal(), "POST", "/refresh_configuration", "")
	var e struct{ Error string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != 500 || e.Error != "Cannot refresh compute configuration in state empty" {
		t.Fatalf("empty: %d %q", w.Code, w.Body)
	}
	// Without a control plane: 500, and the status stays.
	h2 := newHarness(t)
	statetest.MustSet(t, h2.store, state.Running, nil)
	w = h2.do(h2.srv.Internal(), "POST", "/refresh_configuration", "")
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != 500 || !strings.Contains(e.Error, "no control plane configured") || h2.status() != state.Running {
		t.Fatalf("no control plane: %d %q, %s", w.Code, w.Body, h2.status())
	}
	// Not on the external port.
	if w := h.do(h.srv.External(), "POST", "/refresh_configuration", "", withToken(h.adminToken())); w.Code != 404 {
		t.Fatalf("external port: %d", w.Code)
	}
}
