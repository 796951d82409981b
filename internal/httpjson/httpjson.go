// Package httpjson writes the JSON answers of the project's HTTP handlers, and the one
// error shape of compute_ctl's API, {"error": "..."}, which every route of both ports
// uses.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers with status and v as JSON. A value that cannot be encoded gives 500 with
// {"error":"encode response"}.
func Write(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// ErrorBody is the error shape {"error": msg}.
type ErrorBody struct {
	Error string `json:"error"`
}

// Error answers with status and the error shape {"error": msg}.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, ErrorBody{Error: msg})
}
