package api

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"time"
)

const requestIDHeader = "X-Request-Id"

// middleware adds, outside in: the request ID, the request log, and empty bodies for the
// mux's own 404/405 answers.
func (s *Server) middleware(port string, mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(requestIDHeader)
		if id == "" {
			id = newRequestID()
			r.Header.Set(requestIDHeader, id)
		}
		w.Header().Set(requestIDHeader, id)
		rw := &recorder{ResponseWriter: w}

		if _, pattern := mux.Handler(r); pattern == "" {
			// No route matched: the mux answers 404 or 405 with a text body; compute_ctl
			// sends these without a body.
			mux.ServeHTTP(&bodyless{rw}, r)
		} else {
			mux.ServeHTTP(rw, r)
		}
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		// Method, path, status and timing only: never headers (tokens) or bodies.
		s.log.Info("http request", "port", port, "method", r.Method, "path", r.URL.Path,
			"status", rw.status, "latency_ms", float64(time.Since(start).Microseconds())/1000,
			"request_id", id)
	})
}

// newRequestID returns a random UUID (version 4).
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// recorder remembers the status code.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// bodyless keeps the status and headers of a response but drops its body.
type bodyless struct {
	http.ResponseWriter
}

func (b *bodyless) WriteHeader(code int) {
	h := b.Header()
	h.Del("Content-Type")
	h.Del("X-Content-Type-Options")
	h.Set("Content-Length", "0")
	b.ResponseWriter.WriteHeader(code)
}

func (b *bodyless) Write(p []byte) (int, error) { return len(p), nil }
