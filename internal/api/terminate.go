package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/apiwire"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/httpjson"
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

// handleTerminate answers POST /terminate through control.Terminate: 201 with the final
// LSN for an already terminated compute; otherwise it blocks until the compute is
// terminated (200 {"lsn": ...}) or failed (500).
func (s *Server) handleTerminate(w http.ResponseWriter, r *http.Request) {
	immediate, err := terminateMode(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	t, err := s.cfg.Control.Terminate(s.controlContext(r), immediate)
	var failed *control.FailedError
	switch {
	case errors.As(err, &failed):
		httpjson.Error(w, http.StatusInternalServerError, failed.Msg)
	case err != nil:
		s.controlError(w, r, err)
	case t.Already:
		httpjson.Write(w, http.StatusCreated, apiwire.TerminateResponse{LSN: t.LSN})
	default:
		httpjson.Write(w, http.StatusOK, apiwire.TerminateResponse{LSN: t.LSN})
	}
}
