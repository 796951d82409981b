package api

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
)

// handlePromote answers POST /promote (Neon's http/routes/promote.rs): the body is
// SafekeepersLsn, as JSON (Neon's OpenAPI) or as a form (what compute_ctl's handler
// reads); the call blocks until the promotion, its own or the one it joins, has ended:
// 200 {"status":"completed"}, or 500 with the failure. compute_ctl's 500 body is
// {"error": ...}; ours is {"status":"failed","error": ...}, which is both that shape and
// the PromoteState Neon's OpenAPI documents for the 500. A compute that is not running
// is 412 (compute_ctl does not look).
func (s *Server) handlePromote(w http.ResponseWriter, r *http.Request) {
	if _, err := promotestate.CheckContentType(r.Header.Get("Content-Type")); err != nil {
		httpjson.Error(w, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, msgBodyTooBig)
			return
		}
		httpjson.Error(w, http.StatusBadRequest, "failed to buffer the request body: "+strings.ToLower(err.Error()))
		return
	}
	req, err := promotestate.Decode(r.Header.Get("Content-Type"), body)
	if err != nil {
		var de *promotestate.DecodeError
		code := http.StatusBadRequest
		if errors.As(err, &de) {
			switch de.Kind {
			case promotestate.BadContentType:
				code = http.StatusUnsupportedMediaType
			case promotestate.BadData:
				code = http.StatusUnprocessableEntity
			}
		}
		httpjson.Error(w, code, err.Error())
		return
	}
	st, err := s.cfg.Control.Promote(s.controlContext(r), req)
	switch {
	case err != nil:
		s.controlError(w, r, err)
	case st.Status == promotestate.Failed:
		httpjson.Write(w, http.StatusInternalServerError, st)
	default:
		httpjson.Write(w, http.StatusOK, st)
	}
}
