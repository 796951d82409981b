package httpjson

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestError(t *testing.T) {
	w := httptest.NewRecorder()
	Error(w, http.StatusPreconditionFailed, `invalid compute status: "running" <&>`)
	if w.Code != http.StatusPreconditionFailed {
		t.Errorf("status %d", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	// encoding/json escapes <, > and & in strings; clients decode them as they were.
	if got, want := w.Body.String(), `{"error":"invalid compute status: \"running\" \u003c\u0026\u003e"}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
}

func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, http.StatusCreated, struct {
		LSN *string `json:"lsn"`
	}{})
	if w.Code != http.StatusCreated || w.Body.String() != `{"lsn":null}` || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("answer %d %q %q", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
	}
	// A value that cannot be encoded is a 500 in the error shape.
	w = httptest.NewRecorder()
	Write(w, http.StatusOK, func() {})
	if w.Code != http.StatusInternalServerError || w.Body.String() != `{"error":"encode response"}` {
		t.Errorf("unencodable: %d %s", w.Code, w.Body.String())
	}
}
