package lfctest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Mode is how Storage answers.
type Mode int

// The modes.
const (
	// OK keeps PUT bodies by path and answers GET with them (404 when none); 200.
	OK Mode = iota
	// NotFound answers 404 to everything.
	NotFound
	// ServerError answers 500 to everything.
	ServerError
	// Hang never answers (until the client gives up or the server closes).
	Hang
	// Corrupt answers GET with 200 and a body that is not zstd (PUT as OK).
	Corrupt
	// Truncated answers GET with 200, a Content-Length of 100 and 10 bytes, then ends
	// the response (PUT as OK).
	Truncated
)

// Request is one request Storage received.
type Request struct {
	Method, Path, Authorization string
	Body                        []byte
}

// Storage is a fake endpoint storage over httptest.
type Storage struct {
	*httptest.Server

	mu      sync.Mutex
	mode    Mode
	objects map[string][]byte
	reqs    []Request
	hang    chan struct{}
}

// NewStorage starts a fake in mode OK; it is closed when t ends.
func NewStorage(t testing.TB) *Storage {
	s := &Storage{objects: map[string][]byte{}, hang: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.hang)
		s.Server.CloseClientConnections()
		s.Server.Close()
	})
	return s
}

// Addr is the host:port to use as endpoint_storage_addr.
func (s *Storage) Addr() string { return strings.TrimPrefix(s.URL, "http://") }

// SetMode changes how the fake answers.
func (s *Storage) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Put stores body at path (as a PUT would), for a GET to find.
func (s *Storage) Put(path string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[path] = append([]byte(nil), body...)
}

// Object returns what is stored at path.
func (s *Storage) Object(path string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[path]
	return b, ok
}

// Requests returns the requests received so far.
func (s *Storage) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *Storage) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, Request{Method: r.Method, Path: r.URL.EscapedPath(), Authorization: r.Header.Get("Authorization"), Body: body})
	mode := s.mode
	s.mu.Unlock()

	get := r.Method == http.MethodGet
	switch {
	case mode == NotFound:
		http.Error(w, "not found", http.StatusNotFound)
	case mode == ServerError:
		http.Error(w, "boom", http.StatusInternalServerError)
	case mode == Hang:
		select {
		case <-r.Context().Done():
		case <-s.hang:
		}
	case mode == Corrupt && get:
		_, _ = w.Write([]byte("this is not a zstd frame"))
	case mode == Truncated && get:
		w.Header().Set("Content-Length", strconv.Itoa(100))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("0123456789"))
	default:
		path := r.URL.EscapedPath()
		switch r.Method {
		case http.MethodPut:
			s.Put(path, body)
		case http.MethodGet:
			b, ok := s.Object(path)
			if !ok {
				http.Error(w, "not found", http.StatusNotFound)
				return
			}
			_, _ = w.Write(b)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}
}
