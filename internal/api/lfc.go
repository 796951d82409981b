package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// The LFC routes (Neon's http/routes/lfc.rs): the states are read from the state record,
// where compute-monitor publishes them; the POSTs and the DELETE reach the monitor over
// D-Bus (control.LFC), which answers at once whether it took the request.

// handleLFCPrewarmStatus answers GET /lfc/prewarm with the prewarm state (Neon's
// LfcPrewarmState): status, error when failed, total/prewarmed/skipped always, and the
// timings of a completed prewarm.
func (s *Server) handleLFCPrewarmStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Control.LFCStates()
	if err != nil {
		s.log.Error("read state", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, internalError("read state", err))
		return
	}
	httpjson.Write(w, http.StatusOK, st.Prewarm)
}

// handleLFCOffloadStatus answers GET /lfc/offload with the offload state.
func (s *Server) handleLFCOffloadStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Control.LFCStates()
	if err != nil {
		s.log.Error("read state", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, internalError("read state", err))
		return
	}
	httpjson.Write(w, http.StatusOK, st.Offload)
}

// fromEndpoint reads POST /lfc/prewarm's optional ?from_endpoint=ID. As Neon's optional
// query, other parameters are ignored, and a query that does not decode is a 400.
func fromEndpoint(r *http.Request) (string, error) {
	if r.URL.RawQuery == "" {
		return "", nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", errors.New("failed to deserialize query string: malformed query")
	}
	switch v := q["from_endpoint"]; len(v) {
	case 0:
		return "", nil
	case 1:
		return v[0], nil
	}
	return "", errors.New("failed to deserialize query string: duplicate field `from_endpoint`")
}

// handleLFCPrewarm answers POST /lfc/prewarm: 202 once compute-monitor took the prewarm
// (its state is prewarming in the record), 429 while one runs.
func (s *Server) handleLFCPrewarm(w http.ResponseWriter, r *http.Request) {
	from, err := fromEndpoint(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.cfg.Control.LFCPrewarm(r.Context(), from); err != nil {
		s.lfcError(w, r, "prewarm", err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// handleLFCCancelPrewarm answers DELETE /lfc/prewarm (Neon added it after the reference
// commit): 202; a running prewarm ends cancelled, and its Postgres query is cancelled.
func (s *Server) handleLFCCancelPrewarm(w http.ResponseWriter, r *http.Request) {
	if _, err := s.cfg.Control.LFCCancelPrewarm(r.Context()); err != nil {
		s.lfcError(w, r, "cancel prewarm", err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// handleLFCOffload answers POST /lfc/offload: 202 once taken, 429 while an offload runs
// and while a prewarm runs (an incomplete LFC state must not be uploaded; Neon takes it).
func (s *Server) handleLFCOffload(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Control.LFCOffload(r.Context()); err != nil {
		s.lfcError(w, r, "offload", err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// lfcError maps compute-monitor's answer: its refusals to 429 (busy), 412 (the compute is
// not running, or the neon extension is not installed) and 400 (an invalid endpoint id),
// no monitor to 503, anything else (no answer in time included) to 500.
func (s *Server) lfcError(w http.ResponseWriter, r *http.Request, op string, err error) {
	var refused *lfcstate.RefusedError
	switch {
	case errors.As(err, &refused):
		code := http.StatusInternalServerError
		switch refused.Refusal {
		case lfcstate.RefusedBusy:
			code = http.StatusTooManyRequests
		case lfcstate.RefusedNotRunning, lfcstate.RefusedNoExtension:
			code = http.StatusPreconditionFailed
		case lfcstate.RefusedInvalid:
			code = http.StatusBadRequest
		}
		httpjson.Error(w, code, refused.Msg)
	case errors.Is(err, lfcstate.ErrUnavailable):
		s.log.Warn("LFC "+op+": compute-monitor unavailable", "err", err, "request_id", r.Header.Get(requestIDHeader))
		httpjson.Error(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.log.Error("LFC "+op, "err", err, "request_id", r.Header.Get(requestIDHeader))
		httpjson.Error(w, http.StatusInternalServerError, fmt.Sprintf("LFC %s: %v", op, err))
	}
}
