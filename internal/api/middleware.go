package api

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/computetools/compute-tools/internal/httpjson"
)

const requestIDHeader = "X-Request-Id"

// maxRequestID bounds a client's X-Request-Id (a UUID has 36 characters).
const maxRequestID = 128

// validRequestID accepts a client's X-Request-Id of at most maxRequestID letters, digits
// and "-_.:"; anything else is replaced, never echoed or logged.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// logLevel is the level of a request's log line: debug for a successful read (GET
// /status, /metrics and the other polls, which would otherwise put a journal line per
// poll), info for everything else (state changes, refusals, errors).
func logLevel(method string, status int) slog.Level {
	if (method == http.MethodGet || method == http.MethodHead) && status < 400 {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// middleware adds, outside in: the request ID (the client's when valid, else a new
// one), the request log, and empty bodies for the mux's own 404/405 answers.
func (s *Server) middleware(port string, mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
			r.Header.Set(requestIDHeader, id)
		}
		w.Header().Set(requestIDHeader, id)
		rw := &recorder{ResponseWriter: w}

		_, pattern := mux.Handler(r)
		admin := s.adminRoutes[pattern]
		if err := s.internalCaller(port, r, admin); err != nil {
			// A caller the internal port does not serve (for this route).
			s.log.Warn("internal port: request refused", "method", r.Method, "path", r.URL.Path,
				"remote", r.RemoteAddr, "admin_route", admin, "request_id", id, "err", err)
			msg := CallerRefused
			if admin {
				msg = CallerRefusedAdmin
			}
			httpjson.Error(rw, http.StatusForbidden, msg)
		} else if pattern == "" {
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
		if level := logLevel(r.Method, rw.status); s.log.Enabled(r.Context(), level) {
			s.log.Log(r.Context(), level, "http request", "port", port, "method", r.Method, "path", r.URL.Path,
				"status", rw.status, "latency_ms", float64(time.Since(start).Microseconds())/1000,
				"request_id", id)
		}
	})
}

// CallerRefused is the error of the internal port's 403 for a caller that
// Options.InternalCaller refuses on a route that is not an admin one.
const CallerRefused = "the internal port serves only the local users in INTERNAL_HTTP_USERS"

// CallerRefusedAdmin is the error of the internal port's 403 for a caller that
// Options.InternalCaller refuses on an admin route (POST /extensions, /grants).
const CallerRefusedAdmin = "this route of the internal port serves only the local users in INTERNAL_HTTP_ADMIN_USERS"

// internalCaller checks the caller of an internal-port request (Options.InternalCaller).
func (s *Server) internalCaller(port string, r *http.Request, admin bool) error {
	if port != "internal" || s.cfg.InternalCaller == nil {
		return nil
	}
	return s.cfg.InternalCaller(r, admin)
}

// newRequestID returns a random UUID (version 4).
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
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
