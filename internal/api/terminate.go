package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

var errAlreadyTerminated = errors.New("already terminated")

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
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	target := state.TerminationPendingFast
	if immediate {
		target = state.TerminationPendingImmediate
	}

	wake, cancel := s.subscribe()
	defer cancel()

	var from state.Status
	rec, err := s.cfg.Store.Update(func(rec *state.Record) error {
		switch rec.Status {
		case state.Terminated:
			return errAlreadyTerminated
		case state.Empty, state.Running:
			from = rec.Status
			rec.Status = target
			return nil
		}
		return &state.WrongStatusError{Status: rec.Status}
	})
	if errors.Is(err, errAlreadyTerminated) {
		writeJSON(w, http.StatusCreated, terminateResponse{LSN: rec.TerminateLSN})
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
		if err := s.finishTermination(func(state.Record) bool { return true }); err != nil {
			s.stateChangeError(w, err)
			return
		}
	case state.Running:
		if err := s.unitsCall(func(u Units) error { return u.StopPostgres(ctx, immediate) }); err != nil {
			s.failTermination(w, "stop postgres", err)
			return
		}
		// In neon mode the Postgres unit's stop hook syncs the safekeepers and sets
		// terminated with the LSN. Elsewhere there is no LSN to wait for; finish here if
		// no hook did.
		if err := s.finishTermination(func(rec state.Record) bool { return rec.Storage != spec.StorageNeon }); err != nil {
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
		writeError(w, http.StatusInternalServerError, errorText(rec))
		return
	}
	s.log.Info("terminated", "request_id", reqID)
	writeJSON(w, http.StatusOK, terminateResponse{LSN: rec.TerminateLSN})
}

func (s *Server) unitsCall(fn func(Units) error) error {
	if s.cfg.Units == nil {
		return errors.New("no systemd units configured")
	}
	return fn(s.cfg.Units)
}

// finishTermination sets terminated (LSN null) if the status is still
// termination_pending_* and ok approves the record.
func (s *Server) finishTermination(ok func(state.Record) bool) error {
	_, err := s.cfg.Store.Update(func(rec *state.Record) error {
		if rec.Status.TerminationPending() && ok(*rec) {
			rec.Status = state.Terminated
			rec.TerminateLSN = nil
		}
		return nil
	})
	return err
}

// failTermination records a failed termination step and answers 500.
func (s *Server) failTermination(w http.ResponseWriter, what string, err error) {
	msg := fmt.Sprintf("terminate: %s: %v", what, err)
	s.log.Error("termination failed", "step", what, "err", err)
	if _, uerr := s.cfg.Store.Update(func(rec *state.Record) error {
		if rec.Status.TerminationPending() {
			rec.Status = state.Failed
			rec.SetError(msg)
		}
		return nil
	}); uerr != nil {
		s.log.Error("record failed termination", "err", uerr)
	}
	writeError(w, http.StatusInternalServerError, msg)
}
