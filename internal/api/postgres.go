package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
)

// The routes that read or change the running Postgres (Neon's check_writability.rs,
// insights.rs, dbs_and_roles.rs, database_schema.rs on the external port; extensions.rs
// and grants.rs, local_proxy's calls, on the internal port). What they do is
// internal/control's (over internal/pgops); here are the bodies, the query string and the
// status codes.

// handleCheckWritability answers POST /check_writability: 200 `true` once the
// health_check row is written (a full disk counts), 412 unless running, 500 with the
// error otherwise.
func (s *Server) handleCheckWritability(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Control.CheckWritability(s.controlContext(r)); err != nil {
		s.postgresError(w, r, "", err)
		return
	}
	httpjson.Write(w, http.StatusOK, true)
}

// handleInsights answers GET /insights with the pg_stat_statements insights as a JSON
// object (compute_ctl sends it encoded once more, as a string; Neon's OpenAPI document
// says an object). 412 unless running.
func (s *Server) handleInsights(w http.ResponseWriter, r *http.Request) {
	in, err := s.cfg.Control.Insights(s.controlContext(r))
	if err != nil {
		s.postgresError(w, r, "", err)
		return
	}
	httpjson.Write(w, http.StatusOK, in)
}

// handleDBsAndRoles answers GET /dbs_and_roles with the roles and databases of the
// catalog, in any status (500 when Postgres does not answer).
func (s *Server) handleDBsAndRoles(w http.ResponseWriter, r *http.Request) {
	objs, err := s.cfg.Control.DBsAndRoles(s.controlContext(r))
	if err != nil {
		s.postgresError(w, r, "", err)
		return
	}
	httpjson.Write(w, http.StatusOK, objs)
}

// schemaDatabase reads GET /database_schema's required ?database=NAME (other parameters
// are ignored, as serde does).
func schemaDatabase(r *http.Request) (string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", errors.New("failed to deserialize query string: malformed query")
	}
	switch v := q["database"]; len(v) {
	case 0:
		return "", errors.New("failed to deserialize query string: missing field `database`")
	case 1:
		return v[0], nil
	}
	return "", errors.New("failed to deserialize query string: duplicate field `database`")
}

// schemaChunk is the most the handler reads from pg_dump before writing to the client.
const schemaChunk = 32 << 10

// schemaContentType is the schema dump's content type (GET and HEAD).
const schemaContentType = "text/plain; charset=utf-8"

// schemaWriteStall is how long one piece of a schema dump may wait for the client to read.
const schemaWriteStall = time.Minute

// handleDatabaseSchema answers GET /database_schema?database=NAME with pg_dump's
// schema-only output, streamed: each piece is written and flushed as pg_dump gives it,
// so the memory used does not grow with the schema, and a client that goes away ends
// pg_dump (the request's context). 404 `database does not exist`; 500 when pg_dump cannot
// run or fails before its output began. A pg_dump that fails later cuts the answer off
// (the connection is aborted), so that a truncated dump never looks complete. The
// content type is text/plain, as Neon's OpenAPI document says (compute_ctl sends
// application/json). HEAD answers with GET's status and headers without running
// pg_dump: 200 when the database exists, 404 when not, 500 when Postgres does not
// answer (a pg_dump that would fail for another reason is not foreseen).
func (s *Server) handleDatabaseSchema(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		s.headDatabaseSchema(w, r)
		return
	}
	db, err := schemaDatabase(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	rc, err := s.cfg.Control.DatabaseSchema(s.controlContext(r), db)
	if errors.Is(err, pgopswire.ErrDatabaseNotFound) {
		httpjson.Error(w, http.StatusNotFound, pgopswire.ErrDatabaseNotFound.Error())
		return
	}
	if err != nil {
		s.postgresError(w, r, "", err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", schemaContentType)
	w.WriteHeader(http.StatusOK)
	ctl := http.NewResponseController(w)
	buf := make([]byte, schemaChunk)
	for {
		n, rerr := rc.Read(buf)
		if n > 0 {
			// The route is long (no server write deadline), but a client that stops
			// reading must not hold pg_dump and its Postgres session for ever: each write
			// has its own deadline.
			_ = ctl.SetWriteDeadline(time.Now().Add(schemaWriteStall))
			if _, werr := w.Write(buf[:n]); werr != nil {
				s.log.Info("schema dump: client went away", "err", werr, "request_id", r.Header.Get(requestIDHeader))
				return
			}
			_ = ctl.Flush()
		}
		if errors.Is(rerr, io.EOF) {
			return
		}
		if rerr != nil {
			if r.Context().Err() != nil {
				s.log.Info("schema dump: client went away", "request_id", r.Header.Get(requestIDHeader))
				return
			}
			s.log.Error("schema dump failed after its output began; aborting the answer", "err", rerr,
				"request_id", r.Header.Get(requestIDHeader))
			panic(http.ErrAbortHandler)
		}
	}
}

// headDatabaseSchema answers HEAD /database_schema with the status and headers GET would
// give, without starting pg_dump only to kill it: whether the database exists (and
// Postgres answers).
func (s *Server) headDatabaseSchema(w http.ResponseWriter, r *http.Request) {
	hw := &headOnly{ResponseWriter: w}
	defer hw.finish()
	db, err := schemaDatabase(r)
	if err != nil {
		httpjson.Error(hw, http.StatusBadRequest, err.Error())
		return
	}
	err = s.cfg.Control.DatabaseSchemaExists(s.controlContext(r), db)
	switch {
	case errors.Is(err, pgopswire.ErrDatabaseNotFound):
		httpjson.Error(hw, http.StatusNotFound, pgopswire.ErrDatabaseNotFound.Error())
	case err != nil:
		s.postgresError(hw, r, "", err)
	default:
		hw.Header().Set("Content-Type", schemaContentType)
		hw.WriteHeader(http.StatusOK)
	}
}

// headOnly turns an answer into a HEAD answer: the body is held back and only its length
// sent (Content-Length, as net/http sends for a GET answer this small), so that the
// headers are GET's. net/http would drop a HEAD body anyway, after the handler wrote it.
type headOnly struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (h *headOnly) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

func (h *headOnly) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(b)
}

// finish sends the status and headers.
func (h *headOnly) finish() {
	if h.body.Len() > 0 {
		h.Header().Set("Content-Length", strconv.Itoa(h.body.Len()))
	}
	if h.status == 0 {
		h.status = http.StatusOK
	}
	h.ResponseWriter.WriteHeader(h.status)
}

// handleExtensions answers the internal port's POST /extensions (local_proxy): 201
// {extension, version} once installed or updated; 412 unless running; 500 `failed to
// install extension: ...`.
func (s *Server) handleExtensions(w http.ResponseWriter, r *http.Request) {
	var req pgopswire.ExtensionInstallRequest
	if !s.decodeRequest(w, r, &req, "extension", "database", "version") {
		return
	}
	v, err := s.cfg.Control.InstallExtension(s.controlContext(r), req)
	if err != nil {
		s.postgresError(w, r, "failed to install extension: ", err)
		return
	}
	httpjson.Write(w, http.StatusCreated, pgopswire.ExtensionInstallResponse{Extension: req.Extension, Version: v})
}

// handleGrants answers the internal port's POST /grants (local_proxy): 201 with the
// request echoed once the privileges are granted; 412 unless running; 500 `failed to
// grant role privileges to the schema: ...`.
func (s *Server) handleGrants(w http.ResponseWriter, r *http.Request) {
	var req pgopswire.SetRoleGrantsRequest
	if !s.decodeRequest(w, r, &req, "database", "schema", "privileges", "role") {
		return
	}
	if pgopswire.SystemSchema(req.Schema) {
		httpjson.Error(w, http.StatusUnprocessableEntity, fmt.Sprintf("schema %q is a system schema: its privileges are not granted through this route", req.Schema))
		return
	}
	if err := s.cfg.Control.SetRoleGrants(s.controlContext(r), req); err != nil {
		s.postgresError(w, r, "failed to grant role privileges to the schema: ", err)
		return
	}
	privs := req.Privileges
	if privs == nil {
		privs = []pgopswire.Privilege{}
	}
	httpjson.Write(w, http.StatusCreated, pgopswire.SetRoleGrantsResponse{
		Database: req.Database, Schema: req.Schema, Privileges: privs, Role: req.Role})
}

// decodeRequest reads a JSON body into v with the rules of compute_ctl's JSON extractor
// (serde): 415 without a JSON content type, 413 too large, 400 not JSON, 422 not an
// object, a required field missing or null, or a field of the wrong type or value.
// Unknown fields are ignored, as serde does. It answers the error itself and reports
// whether v was decoded.
func (s *Server) decodeRequest(w http.ResponseWriter, r *http.Request, v any, required ...string) bool {
	body, status, msg := s.readJSONBody(w, r)
	if status != 0 {
		httpjson.Error(w, status, msg)
		return false
	}
	if status, msg := decodeFields(body, v, required...); status != 0 {
		httpjson.Error(w, status, msg)
		return false
	}
	return true
}

// decodeFields decodes a syntactically valid JSON body into v; see decodeRequest. A
// non-zero status is the error answer.
func decodeFields(body []byte, v any, required ...string) (int, string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return http.StatusUnprocessableEntity, prefixData + "invalid type: expected an object"
	}
	for _, f := range required {
		raw, ok := top[f]
		if !ok {
			return http.StatusUnprocessableEntity, prefixData + "missing field `" + f + "`"
		}
		if string(raw) == "null" {
			return http.StatusUnprocessableEntity, prefixData + "invalid type: null for field `" + f + "`"
		}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return http.StatusUnprocessableEntity, strings.ToLower(prefixData + err.Error())
	}
	return 0, ""
}

// postgresError answers the failure of a Postgres route: the operation's own failure is
// a 500 with prefix and its text; other errors (the status forbids the call: 412) as
// controlError does.
func (s *Server) postgresError(w http.ResponseWriter, r *http.Request, prefix string, err error) {
	var pgErr *control.PostgresError
	if errors.As(err, &pgErr) {
		s.log.Error("postgres route failed", "path", r.URL.Path, "err", err, "request_id", r.Header.Get(requestIDHeader))
		httpjson.Error(w, http.StatusInternalServerError, prefix+pgErr.Error())
		return
	}
	s.controlError(w, r, err)
}
