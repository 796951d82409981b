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

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Body errors use the texts of axum's JSON extractor, lower-cased as compute_ctl does.
const (
	msgContentType = "expected request with `content-type: application/json`"
	msgBodyTooBig  = "failed to buffer the request body: length limit exceeded"
	prefixSyntax   = "failed to parse the request body as json: "
	prefixData     = "failed to deserialize the json body into the target type: "
)

// pendingConfigError marks a failure to store the pending config.
type pendingConfigError struct{ err error }

func (e *pendingConfigError) Error() string { return "store pending config: " + e.err.Error() }

// handleConfigure answers POST /configure. It stores the config, moves the status to
// configuration_pending and blocks, without a timeout, until the compute is running (200,
// ComputeStatusResponse) or failed (500). On an empty compute, the waiting compute-init
// takes the config; on a running one, the configure unit is re-run to apply it
// (reconfiguration). A failed compute whose Postgres still runs (a failed
// reconfiguration, say) accepts a new config too, which is the way out of failed that
// compute_ctl lacks.
func (s *Server) handleConfigure(w http.ResponseWriter, r *http.Request) {
	body, status, msg := s.readJSONBody(w, r)
	if status != 0 {
		httpjson.Error(w, status, msg)
		return
	}
	// compute_ctl's ConfigurationRequest requires both fields (the OpenAPI document only
	// lists spec; the code wins).
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"invalid type: expected an object")
		return
	}
	for _, f := range []string{"spec", "compute_ctl_config"} {
		raw, ok := top[f]
		if !ok {
			httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"missing field `"+f+"`")
			return
		}
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"invalid type: null for field `"+f+"`")
			return
		}
	}
	cfg, err := s.cfg.ParseConfig(body)
	if err != nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, strings.ToLower(prefixData+err.Error()))
		return
	}
	if cfg.Spec == nil || cfg.ComputeCtlConfig == nil {
		httpjson.Error(w, http.StatusUnprocessableEntity, prefixData+"missing spec or compute_ctl_config")
		return
	}
	parsed, err := s.cfg.ParseSpec(cfg.Spec)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}

	// A failed compute can be reconfigured only while its Postgres runs.
	if cur, err := s.load(); err == nil && cur.Status == state.Failed {
		active, aerr := s.postgresActive(r.Context())
		if aerr != nil {
			s.log.Warn("could not tell whether postgres runs", "err", aerr)
		}
		if !active {
			httpjson.Error(w, http.StatusPreconditionFailed, (&state.WrongStatusError{Status: cur.Status}).Error())
			return
		}
	}

	// Subscribe before touching the state so that no change after it can be missed.
	wake, cancel := s.subscribe()
	defer cancel()

	from, rec, err := s.submitConfig(body, parsed, nil, state.Empty, state.Running, state.Failed)
	if err != nil {
		s.stateChangeError(w, err)
		return
	}
	s.log.Info("configuration received", "from", from, "status", rec.Status,
		"storage", parsed.Storage, "request_id", r.Header.Get(requestIDHeader))
	if from != state.Empty {
		if msg := s.reconfigure(context.WithoutCancel(r.Context())); msg != "" {
			httpjson.Error(w, http.StatusInternalServerError, fmt.Sprintf("compute configuration failed: %q", msg))
			return
		}
	}

	rec, err = s.cfg.Store.Wait(r.Context(), wake, s.cfg.Recheck, func(rec state.Record) bool {
		return rec.Status == state.Running || rec.Status == state.Failed
	})
	if err != nil {
		s.waitError(w, r, err)
		return
	}
	if rec.Status == state.Failed {
		httpjson.Error(w, http.StatusInternalServerError,
			fmt.Sprintf("compute configuration failed: %q", errorText(rec)))
		return
	}
	httpjson.Write(w, http.StatusOK, newStatusResponse(rec))
}

// submitConfig stores body as the pending config and moves the status to
// configuration_pending, if the status is one of from and check (if set) passes, both
// under the state lock; it returns the status it left.
func (s *Server) submitConfig(body []byte, parsed *spec.Parsed, check func() error, from ...state.Status) (state.Status, state.Record, error) {
	return s.cfg.Store.AcceptConfig(from, func(rec *state.Record) error {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		if s.cfg.WritePendingConfig == nil {
			return &pendingConfigError{errors.New("no pending config writer")}
		}
		// Under the state lock: the config is on disk before anyone can see
		// configuration_pending, and nobody can leave empty meanwhile.
		if err := s.cfg.WritePendingConfig(body); err != nil {
			return &pendingConfigError{err}
		}
		if parsed.TenantID != "" {
			rec.Tenant = &parsed.TenantID
		}
		if parsed.TimelineID != "" {
			rec.Timeline = &parsed.TimelineID
		}
		return nil
	})
}

// reconfigure runs the configure step again for a pending config on a compute that was
// running (or failed). A unit that cannot be started leaves failed with a clear error
// (a later /configure can try again); the returned text says why, empty on success of
// the start (the outcome of the step itself is the status it records).
func (s *Server) reconfigure(ctx context.Context) string {
	err := s.unitsCall(func(u Units) error { return u.Reconfigure(ctx) })
	if err == nil {
		return ""
	}
	msg := "reconfigure: " + err.Error()
	cur, _, _ := s.cfg.Store.Fail(state.ActorAPI, msg, state.ConfigurationPending, state.Configuration)
	if cur.Status == state.Failed && cur.Error != nil {
		// The configure step recorded why it failed: that is the better answer.
		msg = *cur.Error
	}
	return msg
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

// stateChangeError answers a refused or failed state change.
func (s *Server) stateChangeError(w http.ResponseWriter, err error) {
	var wrong *state.WrongStatusError
	var illegal *state.TransitionError
	var pending *pendingConfigError
	switch {
	case errors.As(err, &wrong):
		httpjson.Error(w, http.StatusPreconditionFailed, wrong.Error())
	case errors.As(err, &illegal):
		// The status moved under us; answer as for a wrong status.
		httpjson.Error(w, http.StatusPreconditionFailed, (&state.WrongStatusError{Status: illegal.From}).Error())
	case errors.As(err, &pending):
		s.log.Error("store pending config", "err", pending.err)
		httpjson.Error(w, http.StatusInternalServerError, pending.Error())
	default:
		s.log.Error("update state", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, internalError("update state", err))
	}
}

// waitError handles the end of a blocked wait without a result: the client went away
// (nothing to answer) or the state could not be read.
func (s *Server) waitError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		s.log.Info("client gave up waiting", "path", r.URL.Path, "request_id", r.Header.Get(requestIDHeader))
		httpjson.Error(w, http.StatusServiceUnavailable, "request cancelled")
		return
	}
	s.log.Error("wait for state", "err", err)
	httpjson.Error(w, http.StatusInternalServerError, internalError("wait for state", err))
}
