package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// benchServer is the real handler chain of the external port (middleware, JWT check,
// controller, state file on disk) with the production logger at its default level
// writing to io.Discard, for a running compute.
func benchServer(b *testing.B) (*harness, http.Handler, string) {
	b.Helper()
	log := logx.New(io.Discard, "compute-api", logx.Options{})
	h := newHarness(b, func(c *harnessConfig) { c.api.Logger = log; c.ctl.Logger = log })
	h.toRunning(spec.StorageNeon)
	if _, err := statetest.Set(h.store, state.Running, func(r *state.Record) {
		tenant, timeline := testTenant, testTimeline
		r.Tenant, r.Timeline = &tenant, &timeline
	}); err != nil {
		b.Fatal(err)
	}
	return h, h.srv.External(), "Bearer " + h.computeToken()
}

// BenchmarkStatus is GET /status through the external port's handler chain, as a
// control plane polls it: the same token every time.
func BenchmarkStatus(b *testing.B) {
	_, handler, authz := benchServer(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest(http.MethodGet, "/status", nil)
		r.Header.Set("Authorization", authz)
		for pb.Next() {
			r.Header.Del(requestIDHeader)
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
		}
	})
}
