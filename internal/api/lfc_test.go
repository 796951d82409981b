package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

// fakeMonitor stands for compute-monitor's D-Bus methods (control.LFC): it records the
// calls and answers with err.
type fakeMonitor struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeMonitor) call(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.err
}

func (f *fakeMonitor) LFCPrewarm(_ context.Context, from string) error {
	return f.call("prewarm(" + from + ")")
}
func (f *fakeMonitor) LFCOffload(context.Context) error { return f.call("offload") }
func (f *fakeMonitor) LFCCancelPrewarm(context.Context) (bool, error) {
	return true, f.call("cancel")
}

func (f *fakeMonitor) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeMonitor) taken() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func withMonitor(m *fakeMonitor) option {
	return func(c *harnessConfig) { c.ctl.LFC = m }
}

func TestLFCStatesFromTheRecord(t *testing.T) {
	h := newHarness(t)
	tok := withToken(h.computeToken())
	// Nothing published yet: the initial states, with the fields Neon's document requires.
	w := h.do(h.srv.External(), "GET", "/lfc/prewarm", "", tok)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"not_prewarmed","total":0,"prewarmed":0,"skipped":0}` {
		t.Fatalf("GET /lfc/prewarm = %d %s", w.Code, w.Body)
	}
	w = h.do(h.srv.External(), "GET", "/lfc/offload", "", tok)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"not_offloaded"}` {
		t.Fatalf("GET /lfc/offload = %d %s", w.Code, w.Body)
	}
	// What the monitor published.
	statetest.MustSet(t, h.store, state.Running, func(r *state.Record) {
		r.LFC = &lfcstate.States{Seq: 4,
			Prewarm: lfcstate.PrewarmState{Status: lfcstate.PrewarmCompleted, Progress: lfcstate.Progress{Total: 10, Prewarmed: 9, Skipped: 1},
				Timings: lfcstate.PrewarmTimings{StateDownloadMs: 3, UncompressMs: 1, PrewarmMs: 40}},
			Offload: lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: "500 Internal Server Error"},
		}
		r.Counters.LFC = lfcstate.Counters{Prewarms: 2, PrewarmErrors: 1, Offloads: 5, OffloadErrors: 3}
	})
	w = h.do(h.srv.External(), "GET", "/lfc/prewarm", "", tok)
	want := `{"status":"completed","total":10,"prewarmed":9,"skipped":1,"state_download_time_ms":3,"uncompress_time_ms":1,"prewarm_time_ms":40}`
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != want {
		t.Errorf("GET /lfc/prewarm = %d %s, want %s", w.Code, w.Body, want)
	}
	w = h.do(h.srv.External(), "GET", "/lfc/offload", "", tok)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"failed","error":"500 Internal Server Error"}` {
		t.Errorf("GET /lfc/offload = %d %s", w.Code, w.Body)
	}
	// The counters on /metrics.
	w = h.do(h.srv.External(), "GET", "/metrics", "")
	for _, line := range []string{
		"compute_ctl_lfc_prewarms_total 2", "compute_ctl_lfc_prewarm_errors_total 1",
		"compute_ctl_lfc_offloads_total 5", "compute_ctl_lfc_offload_errors_total 3",
	} {
		if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestLFCCountersAlwaysOnMetrics(t *testing.T) {
	h := newHarness(t)
	w := h.do(h.srv.External(), "GET", "/metrics", "")
	for _, line := range []string{"compute_ctl_lfc_prewarms_total 0", "compute_ctl_lfc_offload_errors_total 0"} {
		if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestLFCRequests(t *testing.T) {
	m := &fakeMonitor{}
	h := newHarness(t, withMonitor(m))
	tok := withToken(h.computeToken())
	ext := h.srv.External()

	for _, tc := range []struct {
		method, target string
		err            error
		code           int
		body           string // the error text, "" for an empty body
		call           string // what reached the monitor, "" for nothing
	}{
		{"POST", "/lfc/prewarm", nil, 202, "", "prewarm()"},
		{"POST", "/lfc/prewarm?from_endpoint=ep-other-1", nil, 202, "", "prewarm(ep-other-1)"},
		{"POST", "/lfc/prewarm?unrelated=1", nil, 202, "", "prewarm()"},
		{"POST", "/lfc/prewarm?from_endpoint=a&from_endpoint=b", nil, 400, "failed to deserialize query string: duplicate field `from_endpoint`", ""},
		{"POST", "/lfc/prewarm?from_endpoint=%zz", nil, 400, "failed to deserialize query string: malformed query", ""},
		{"POST", "/lfc/prewarm", &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: "Multiple requests for prewarm are not allowed"}, 429, "Multiple requests for prewarm are not allowed", "prewarm()"},
		{"POST", "/lfc/prewarm?from_endpoint=..", &lfcstate.RefusedError{Refusal: lfcstate.RefusedInvalid, Msg: "invalid endpoint id: x"}, 400, "invalid endpoint id: x", "prewarm(..)"},
		{"POST", "/lfc/offload", nil, 202, "", "offload"},
		{"POST", "/lfc/offload", &lfcstate.RefusedError{Refusal: lfcstate.RefusedBusy, Msg: "LFC offload refused: a prewarm is in progress"}, 429, "LFC offload refused: a prewarm is in progress", "offload"},
		{"POST", "/lfc/offload", &lfcstate.RefusedError{Refusal: lfcstate.RefusedNotRunning, Msg: "compute is not running"}, 412, "compute is not running", "offload"},
		{"POST", "/lfc/offload", fmt.Errorf("%w: gone", lfcstate.ErrUnavailable), 503, "compute-monitor is not available: gone", "offload"},
		{"POST", "/lfc/offload", errors.New("boom"), 500, "LFC offload: boom", "offload"},
		{"POST", "/lfc/offload", &lfcstate.RefusedError{Refusal: lfcstate.RefusedNoExtension, Msg: "neon extension not installed"}, 412, "neon extension not installed", "offload"},
		{"POST", "/lfc/prewarm", fmt.Errorf("%w: timeout", lfcstate.ErrNoAnswer), 500, "LFC prewarm: " + lfcstate.ErrNoAnswer.Error() + ": timeout", "prewarm()"},
		{"DELETE", "/lfc/prewarm", nil, 202, "", "cancel"},
		{"DELETE", "/lfc/prewarm", fmt.Errorf("%w: gone", lfcstate.ErrUnavailable), 503, "compute-monitor is not available: gone", "cancel"},
		{"DELETE", "/lfc/prewarm", errors.New("boom"), 500, "LFC cancel prewarm: boom", "cancel"},
		{"POST", "/lfc/prewarm", &lfcstate.RefusedError{Refusal: lfcstate.RefusedNotRunning, Msg: "compute is not running"}, 412, "compute is not running", "prewarm()"},
	} {
		m.set(tc.err)
		before := len(m.taken())
		w := h.do(ext, tc.method, tc.target, "", tok)
		name := tc.method + " " + tc.target
		if w.Code != tc.code {
			t.Errorf("%s (monitor: %v) = %d %s, want %d", name, tc.err, w.Code, w.Body, tc.code)
			continue
		}
		if tc.body == "" {
			if w.Body.Len() != 0 {
				t.Errorf("%s: body %q, want none", name, w.Body)
			}
		} else {
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error != tc.body {
				t.Errorf("%s: body %s, want error %q", name, w.Body, tc.body)
			}
		}
		calls := m.taken()[before:]
		switch {
		case tc.call == "" && len(calls) != 0:
			t.Errorf("%s reached the monitor: %v", name, calls)
		case tc.call != "" && (len(calls) != 1 || calls[0] != tc.call):
			t.Errorf("%s: monitor calls %v, want [%s]", name, calls, tc.call)
		}
	}

	// Every LFC route needs a token; none reaches the monitor without one.
	m.set(nil)
	before := len(m.taken())
	for _, r := range [][2]string{{"GET", "/lfc/prewarm"}, {"POST", "/lfc/prewarm"}, {"DELETE", "/lfc/prewarm"}, {"GET", "/lfc/offload"}, {"POST", "/lfc/offload"}} {
		if w := h.do(ext, r[0], r[1], ""); w.Code != http.StatusBadRequest { // no Authorization header: 400, as compute_ctl
			t.Errorf("%s %s without a token = %d", r[0], r[1], w.Code)
		}
	}
	if n := len(m.taken()) - before; n != 0 {
		t.Errorf("%d calls reached the monitor without a token", n)
	}
}

// Without a D-Bus connection to reach the monitor, the requests are 503 and the states
// still read.
func TestLFCWithoutMonitor(t *testing.T) {
	h := newHarness(t)
	tok := withToken(h.computeToken())
	w := h.do(h.srv.External(), "POST", "/lfc/prewarm", "", tok)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "compute-monitor is not available") {
		t.Errorf("POST /lfc/prewarm without a monitor = %d %s", w.Code, w.Body)
	}
	if w := h.do(h.srv.External(), "GET", "/lfc/prewarm", "", tok); w.Code != 200 {
		t.Errorf("GET /lfc/prewarm = %d", w.Code)
	}
}

// compute_installed_extensions comes from the latest collection in the record.
func TestInstalledExtensionsMetric(t *testing.T) {
	h := newHarness(t)
	if w := h.do(h.srv.External(), "GET", "/metrics", ""); strings.Contains(w.Body.String(), "compute_installed_extensions{") {
		t.Errorf("a series before any collection:\n%s", w.Body)
	}
	statetest.MustSet(t, h.store, state.Running, func(r *state.Record) {
		r.InstalledExtensions = &extstats.Stats{Extensions: []extstats.Extension{
			{Name: "neon", Version: "1.6", NDatabases: 3, OwnedBySuperuser: extstats.Superuser},
			{Name: "pg_trgm", Version: "1.6", NDatabases: 1, OwnedBySuperuser: extstats.NotSuperuser},
		}}
	})
	w := h.do(h.srv.External(), "GET", "/metrics", "")
	for _, line := range []string{
		`compute_installed_extensions{extension_name="neon",owned_by_superuser="1",version="1.6"} 3`,
		`compute_installed_extensions{extension_name="pg_trgm",owned_by_superuser="0",version="1.6"} 1`,
	} {
		if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

// compute_audit_log_dir_size is always there: 0 until compute-monitor measured, then
// the record's figure.
func TestAuditLogDirSizeMetric(t *testing.T) {
	h := newHarness(t)
	if w := h.do(h.srv.External(), "GET", "/metrics", ""); !strings.Contains(w.Body.String(), "\ncompute_audit_log_dir_size 0\n") {
		t.Errorf("no compute_audit_log_dir_size 0 before a measurement:\n%s", w.Body)
	}
	statetest.MustSet(t, h.store, state.Running, func(r *state.Record) {
		v := uint64(123456)
		r.AuditLogDirSize = &v
	})
	w := h.do(h.srv.External(), "GET", "/metrics", "")
	for _, line := range []string{"# TYPE compute_audit_log_dir_size gauge", "compute_audit_log_dir_size 123456"} {
		if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", line, w.Body)
		}
	}
}
