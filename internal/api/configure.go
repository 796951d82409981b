package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/statusview"
)

// Body errors use the texts of axum's JSON extractor, lower-cased as compute_ctl does.
const (
	msgContentType = "expected request with `content-type: application/json`"
	msgBodyTooBig  = "failed to buffer the request body: length limit exceeded"
	prefixSyntax   = "failed to parse the request body as json: "
	prefixData     = "failed to deserialize the json body into the target type: "
)

// handleConfigure answers POST /configure: the body rules and the decoding of
// compute_ctl's ConfigurationRequest here, then control.Configure, which blocks until
// the compute is running (200, ComputeStatusResponse) or failed (500).
func (s *Server) handleConfigure(w http.ResponseWriter, r *http.Request) {
	body, parsed, ok := s.readConfigure(w, r)
	if !ok {
		return
	}
	rec, err := s.cfg.Control.Configure(s.controlContext(r), body, parsed)
	var failed *control.FailedError
	switch {
	case errors.As(err, &failed):
		httpjson.Error(w, http.StatusInternalServerError, fmt.Sprintf("compute configuration failed: %q", failed.Msg))
	case err != nil:
		s.controlError(w, r, err)
	default:
		httpjson.Write(w, http.StatusOK, statusview.Of(rec))
	}
}

// readConfigure reads and decodes a POST /configure body, at most Options.ConfigureParses
// at once (the others wait: each holds a body of up to MaxBodyBytes and its parse), and
// then lifts the connection's read deadline for the wait that follows. On a refusal it
// has answered, and ok is false.
func (s *Server) readConfigure(w http.ResponseWriter, r *http.Request) (body []byte, parsed *spec.Parsed, ok bool) {
	if !s.parses.enter(r.Context()) {
		httpjson.Error(w, http.StatusServiceUnavailable, "request cancelled")
		return nil, nil, false
	}
	defer s.parses.leave()
	body, status, msg := s.readJSONBody(w, r)
	if status != 0 {
		httpjson.Error(w, status, msg)
		return nil, nil, false
	}
	liftReadDeadline(w)
	// compute_ctl's ConfigurationRequest requires both fields (the OpenAPI document only
	// lists spec; the code wins).
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"invalid type: expected an object")
		return
	}
	for _, f := range []string{"spec", "compute_ctl_config"} {
		raw, found := top[f]
		if !found {
			httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"missing field `"+f+"`")
			return
		}
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"invalid type: null for field `"+f+"`")
			return
		}
	}
	cfg, err := spec.ParseConfig(body)
	if err != nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, strings.ToLower(prefixData+err.Error()))
		return
	}
	if cfg.Spec == nil || cfg.ComputeCtlConfig == nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"missing spec or compute_ctl_config")
		return
	}
	parsed, err = spec.Parse(cfg.Spec)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, n := range parsed.Pageserver.Notes {
		s.log.Warn("configure: pageserver connection info accepted as Neon takes it", "note", n)
	}
	return body, parsed, true
}

// readJSONBody checks the content type and reads a syntactically valid JSON body. A
// non-zero status is the error answer.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	if !isJSONContentType(r.Header.Get("Content-Type")) {
		return nil, http.StatusUnsupportedMediaType, msgContentType
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, msgBodyTooBig
		}
		return nil, http.StatusBadRequest, "failed to buffer the request body: " + strings.ToLower(err.Error())
	}
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		msg := "invalid json"
		if err != nil {
			msg = err.Error()
		}
		return nil, http.StatusBadRequest, strings.ToLower(prefixSyntax + msg)
	}
	return body, 0, ""
}

// isJSONContentType accepts application/json and application/*+json, as axum does.
func isJSONContentType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// controlContext is the request's context, carrying a logger with the request ID for
// control's log lines.
func (s *Server) controlContext(r *http.Request) context.Context {
	return control.WithLogger(r.Context(), s.log.With("request_id", r.Header.Get(requestIDHeader)))
}

// controlError answers an error of a control operation other than the route's own
// FailedError: a refused state change (412), a failure to store the pending config or
// to change or read the state (500), or a client that went away while waiting.
func (s *Server) controlError(w http.ResponseWriter, r *http.Request, err error) {
	var wrong *state.WrongStatusError
	var illegal *state.TransitionError
	var pending *control.PendingConfigError
	var stateErr *control.StateError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The client gave up waiting: nothing to answer.
		s.log.Info("client gave up waiting", "path", r.URL.Path, "request_id", r.Header.Get(requestIDHeader))
		httpjson.Error(w, http.StatusServiceUnavailable, "request cancelled")
	case errors.As(err, &wrong):
		httpjson.Error(w, http.StatusPreconditionFailed, wrong.Error())
	case errors.As(err, &illegal):
		// The status moved under us; answer as for a wrong status.
		httpjson.Error(w, http.StatusPreconditionFailed, (&state.WrongStatusError{Status: illegal.From}).Error())
	case errors.As(err, &pending):
		s.log.Error("store pending config", "err", pending.Err)
		httpjson.Error(w, http.StatusInternalServerError, pending.Error())
	case errors.As(err, &stateErr):
		s.log.Error(stateErr.Op, "err", stateErr.Err)
		httpjson.Error(w, http.StatusInternalServerError, stateErr.Error())
	default:
		s.log.Error("control", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, err.Error())
	}
}

// handleRefreshConfiguration answers POST /refresh_configuration (internal port) through
// control.RefreshConfiguration: 200 with an empty body once the refresh is requested (it
// runs in the background), 500 with compute_ctl's text in a status that allows none.
func (s *Server) handleRefreshConfiguration(w http.ResponseWriter, r *http.Request) {
	err := s.cfg.Control.RefreshConfiguration(s.controlContext(r))
	var refused *state.RefreshRefusedError
	switch {
	case err == nil:
		w.WriteHeader(http.StatusOK)
	case errors.As(err, &refused):
		httpjson.Error(w, http.StatusInternalServerError, refused.Error())
	default:
		s.controlError(w, r, err)
	}
}
