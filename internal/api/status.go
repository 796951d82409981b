package api

import (
	"net/http"

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/statusview"
)

// handleStatus answers GET /status with ComputeStatusResponse: the last good record when
// the state file cannot be read (Server.record).
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	rec, err := s.record()
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, internalError("read state", err))
		return
	}
	httpjson.Write(w, http.StatusOK, statusview.Of(rec))
}

// handleMetricsJSON answers GET /metrics.json with the startup timings (ComputeMetrics).
func (s *Server) handleMetricsJSON(w http.ResponseWriter, r *http.Request) {
	rec, err := s.record()
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, internalError("read state", err))
		return
	}
	httpjson.Write(w, http.StatusOK, rec.Metrics)
}
