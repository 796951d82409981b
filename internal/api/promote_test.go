package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const promoteJSON = `{"safekeepers":"sk-0:5454,sk-1:5454","wal_flush_lsn":"0/16B5A50"}`

func formBody() reqOpt { return withHeader("Content-Type", "application/x-www-form-urlencoded") }

// setPromotion puts the compute into status st as a replica of storage, with the
// promotion p (nil: none).
func (h *harness) setPromotion(st state.Status, mode spec.ModeType, p *promotestate.Promotion) {
	h.t.Helper()
	statetest.MustSet(h.t, h.store, st, func(r *state.Record) {
		r.Mode, r.Storage, r.Promotion = mode, spec.StorageStandalone, p
	})
}

func promoteState(t *testing.T, w interface{ Header() http.Header }, body []byte) promotestate.State {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var st promotestate.State
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return st
}

func TestPromoteBadBodies(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.api.MaxBodyBytes = 1024 })
	h.setPromotion(state.Running, spec.ModeTypeReplica, nil)
	tok := withToken(h.computeToken())
	for _, tc := range []struct {
		name, body string
		opts       []reqOpt
		code       int
		prefix     string
	}{
		{"no content type", promoteJSON, nil, http.StatusUnsupportedMediaType, "expected request with `content-type: application/json` or"},
		{"text/plain", promoteJSON, []reqOpt{withHeader("Content-Type", "text/plain")}, http.StatusUnsupportedMediaType, "expected request with"},
		{"not json", "safekeepers=a", []reqOpt{jsonBody()}, http.StatusBadRequest, "failed to parse the request body as json: "},
		{"wrong type", `{"safekeepers":1,"wal_flush_lsn":"0/1"}`, []reqOpt{jsonBody()}, http.StatusUnprocessableEntity, "failed to deserialize the json body into the target type: invalid type: number"},
		{"lsn number", `{"safekeepers":"a","wal_flush_lsn":1}`, []reqOpt{jsonBody()}, http.StatusUnprocessableEntity, "failed to deserialize the json body into the target type: invalid type: number"},
		{"missing field", `{"safekeepers":"a"}`, []reqOpt{jsonBody()}, http.StatusUnprocessableEntity, "failed to deserialize the json body into the target type: missing field `wal_flush_lsn`"},
		{"form missing", "safekeepers=a", []reqOpt{formBody()}, http.StatusUnprocessableEntity, "failed to deserialize form body: missing field `wal_flush_lsn`"},
		{"form bad lsn", "safekeepers=a&wal_flush_lsn=nope", []reqOpt{formBody()}, http.StatusUnprocessableEntity, "failed to deserialize form body: invalid LSN"},
		{"form duplicate", "safekeepers=a&wal_flush_lsn=0/1&wal_flush_lsn=0/2", []reqOpt{formBody()}, http.StatusUnprocessableEntity, "failed to deserialize form body: duplicate field `wal_flush_lsn`"},
		{"huge", `{"safekeepers":"` + strings.Repeat("a", 2048) + `","wal_flush_lsn":"0/1"}`, []reqOpt{jsonBody()}, http.StatusRequestEntityTooLarge, "failed to buffer the request body: length limit exceeded"},
		{"huge form", "safekeepers=" + strings.Repeat("a", 2048) + "&wal_flush_lsn=0/1", []reqOpt{formBody()}, http.StatusRequestEntityTooLarge, "failed to buffer the request body: length limit exceeded"},
		{"huge, wrong type", strings.Repeat("a", 2048), []reqOpt{withHeader("Content-Type", "text/plain")}, http.StatusUnsupportedMediaType, "expected request with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do(h.srv.External(), "POST", "/promote", tc.body, append(tc.opts, tok)...)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.code, w.Body)
			}
			if msg := errorBody(t, w); !strings.HasPrefix(msg, tc.prefix) {
				t.Errorf("error %q, want it to start with %q", msg, tc.prefix)
			}
		})
	}
	// Nothing was begun.
	if rec, _ := h.store.Load(); rec.Promotion != nil || rec.Status != state.Running {
		t.Errorf("record after bad bodies: %s, %+v", rec.Status, rec.Promotion)
	}
	// No token: refused (400, as compute_ctl) before the body is looked at.
	expect(t, h.do(h.srv.External(), "POST", "/promote", "not a body", jsonBody()), http.StatusBadRequest, "invalid authorization token")
}

func TestPromoteWrongStatus(t *testing.T) {
	for _, st := range []state.Status{state.Empty, state.Init, state.ConfigurationPending, state.Configuration, state.Failed, state.TerminationPendingFast, state.Terminated} {
		h := newHarness(t)
		h.setPromotion(st, spec.ModeTypeReplica, nil)
		w := h.do(h.srv.External(), "POST", "/promote", promoteJSON, jsonBody(), withToken(h.computeToken()))
		expect(t, w, http.StatusPreconditionFailed, "invalid compute status: "+st.Display())
		if rec, _ := h.store.Load(); rec.Promotion != nil {
			t.Errorf("%s: a promotion was begun: %+v", st, rec.Promotion)
		}
	}
}

// Not a replica: compute_ctl's 500 "<mode> is not replica", recorded as a failed
// promotion; the body is a PromoteState and the {"error": ...} shape at once.
func TestPromoteNotReplica(t *testing.T) {
	for _, mode := range []spec.ModeType{spec.ModeTypePrimary, spec.ModeTypeStatic} {
		h := newHarness(t)
		h.setPromotion(state.Running, mode, nil)
		w := h.do(h.srv.External(), "POST", "/promote", "safekeepers=a%3A1&wal_flush_lsn=0%2F1", formBody(), withToken(h.computeToken()))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("%s: status %d (%s)", mode, w.Code, w.Body)
		}
		want := promotestate.State{Status: promotestate.Failed, Error: string(mode) + " is not replica"}
		if st := promoteState(t, w, w.Body.Bytes()); st != want {
			t.Errorf("%s: %+v, want %+v", mode, st, want)
		}
		rec, _ := h.store.Load()
		if rec.Promotion == nil || rec.Promotion.Phase != promotestate.PhaseFailed || rec.Mode != mode || rec.Status != state.Running {
			t.Errorf("%s: record %s %s %+v", mode, rec.Status, rec.Mode, rec.Promotion)
		}
	}
}

// After a completed promotion every call answers 200 completed, JSON or form.
func TestPromoteAfterCompletion(t *testing.T) {
	h := newHarness(t)
	h.setPromotion(state.Running, spec.ModeTypePrimary, &promotestate.Promotion{Phase: promotestate.PhaseCompleted})
	for _, tc := range []struct {
		body string
		opt  reqOpt
	}{
		{promoteJSON, jsonBody()},
		{"safekeepers=sk-0%3A5454&wal_flush_lsn=0%2F16B5A50", formBody()},
		{"wal_flush_lsn=0/16B5A50&safekeepers=sk-0:5454", withHeader("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")},
	} {
		w := h.do(h.srv.External(), "POST", "/promote", tc.body, tc.opt, withToken(h.computeToken()))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d (%s)", w.Code, w.Body)
		}
		if st := promoteState(t, w, w.Body.Bytes()); st != (promotestate.State{Status: promotestate.Completed}) {
			t.Errorf("%+v", st)
		}
	}
}
