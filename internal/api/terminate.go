package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/state"
)

// terminateMode reads ?mode=fast|immediate. No query string means fast; a query string
// without exactly one valid mode is refused. (compute_ctl answers that 400 with axum's
// plain-text rejection; we keep the JSON error shape of every other error.)
func terminateMode(r *http.Request) (immediate bool, err error) {
	if r.URL.RawQuery == "" {
		return false, nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return false, errors.New("failed to deserialize query string: malformed query")
	}
	modes := q["mode"]
	switch {
	case len(modes) == 0:
		return false, errors.New("failed to deserialize query string: missing field `mode`")
	case len(modes) > 1:
		return false, errors.New("failed to deserialize query string: duplicate field `mode`")
	}
	switch modes[0] {
	case "fast":
		return false, nil
	case "immediate":
		return true, nil
	}
	return false, fmt.Errorf("failed to deserialize query string: unknown variant %q, expected `fast` or `immediate`", modes[0])
}

// handleTerminate answers POST /terminate. An already terminated compute answers 201
// with the final LSN. An empty or running compute moves to termination_pending_*; then
// a waiting compute-init is stopped (empty; compute_ctl would hang here) or Postgres is
// stopped through systemd (running), and the request blocks until the status is
// terminated (200 {"lsn": ...}) or failed (500).
func (s *Server) handleTerminate(w http.ResponseWriter, r *http.Request) {
	immediate, err := terminateMode(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	wake, cancel := s.subscribe()
	defer cancel()

	from, rec, err := s.cfg.Store.BeginTermination(immediate)
	if errors.Is(err, state.ErrAlreadyTerminated) {
		httpjson.Write(w, http.StatusCreated, terminateResponse{LSN: rec.TerminateLSN})
		return
	}
	if err != nil {
		s.stateChangeError(w, err)
		return
	}
	reqID := r.Header.Get(requestIDHeader)
	s.log.Info("terminating", "from", from, "status", rec.Status, "request_id", reqID)

	// The work below must finish even if the client goes away; only the final wait
	// follows the request.
	ctx := context.WithoutCancel(r.Context())
	switch from {
	case state.Empty:
		if err := s.unitsCall(func(u Units) error { return u.CancelStartup(ctx) }); err != nil {
			s.failTermination(w, "cancel startup", err)
			return
		}
		// Nothing ran, so there is no final LSN.
		if _, _, err := s.cfg.Store.CompleteTermination(state.ActorAPI, nil); err != nil {
			s.stateChangeError(w, err)
			return
		}
	case state.Running:
		if err := s.unitsCall(func(u Units) error { return u.StopPostgres(ctx, immediate) }); err != nil {
			s.failTermination(w, "stop postgres", err)
			return
		}
		// For a neon primary the Postgres unit's stop hook syncs the safekeepers and sets
		// terminated with the LSN (state.Record.NeedsFinalSync). Elsewhere there is no
		// LSN to wait for; finish here if no hook did.
		if _, _, err := s.cfg.Store.CompleteTermination(state.ActorAPI, nil); err != nil {
			s.stateChangeError(w, err)
			return
		}
	}

	rec, err = s.cfg.Store.Wait(r.Context(), wake, s.cfg.Recheck, func(rec state.Record) bool {
		return rec.Status == state.Terminated || rec.Status == state.Failed
	})
	if err != nil {
		s.waitError(w, r, err)
		return
	}
	if rec.Status == state.Failed {
		httpjson.Error(w, http.StatusInternalServerError, errorText(rec))
		return
	}
	s.log.Info("terminated", "request_id", reqID)
	httpjson.Write(w, http.StatusOK, terminateResponse{LSN: rec.TerminateLSN})
}

func (s *Server) unitsCall(fn func(Units) error) error {
	if s.cfg.Units == nil {
		return errors.New("no systemd units configured")
	}
	return fn(s.cfg.Units)
}

// failTermination records a failed termination step and answers 500.
func (s *Server) failTermination(w http.ResponseWriter, what string, err error) {
	msg := fmt.Sprintf("terminate: %s: %v", what, err)
	s.log.Error("termination failed", "step", what, "err", err)
	if _, _, uerr := s.cfg.Store.Fail(state.ActorAPI, msg, state.TerminationPendingFast, state.TerminationPendingImmediate); uerr != nil {
		s.log.Error("record failed termination", "err", uerr)
	}
	httpjson.Error(w, http.StatusInternalServerError, msg)
}
