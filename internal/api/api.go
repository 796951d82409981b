// Package api serves compute-api's two HTTP ports with Neon compute_ctl's contract
// (inventory §3): the external port (JWT-protected, plus the open /metrics) and the
// internal port (no auth). Handlers work over narrow interfaces declared here: the state
// store, a wake-up source for state changes (D-Bus signals in production), the systemd
// units, and the writer of the pending config. The package never starts processes or
// touches Postgres itself; it changes the state record and asks systemd to act.
//
// Routes so far: GET /status, GET /metrics.json, GET /metrics, POST /configure (first
// configuration of an empty compute) and POST /terminate. Other routes of Neon's API are
// added by registering them in buildExternal or buildInternal.
//
// /metrics is served with Prometheus' client_golang (a private registry) rather than
// hand-written text, for a correct exposition format and content negotiation with the
// scraper; see metrics.go.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the part of the state store the handlers use (*state.Store implements it):
// reading and waiting, and the lifecycle operations of the API (state.ActorAPI), each
// of which checks the status and changes it in one step under the store's lock.
type Store interface {
	Load() (state.Record, error)
	AcceptConfig(from []state.Status, fn func(*state.Record) error) (state.Status, state.Record, error)
	BeginTermination(immediate bool) (state.Status, state.Record, error)
	CompleteTermination(a state.Actor, lsn *string) (state.Record, bool, error)
	Fail(a state.Actor, msg string, during ...state.Status) (state.Record, bool, error)
	Wait(ctx context.Context, wake <-chan struct{}, recheck time.Duration, pred func(state.Record) bool) (state.Record, error)
}

// Waker delivers a wake-up whenever the state record may have changed (the D-Bus status
// signal). Subscribe must not miss a change that happens after it returns; cancel
// releases the subscription. Wake-ups may be coalesced.
type Waker interface {
	Subscribe() (wake <-chan struct{}, cancel func())
}

// Units drives the compute's systemd units.
type Units interface {
	// StopPostgres stops the Postgres unit and returns when the stop job is done. Its
	// stop hook moves the status to terminated (after the final safekeeper sync).
	StopPostgres(ctx context.Context, immediate bool) error
	// CancelStartup stops compute-init while it waits for a config.
	CancelStartup(ctx context.Context) error
	// Reconfigure re-runs the configure step (compute-configure.service), which applies
	// the pending config to the running Postgres.
	Reconfigure(ctx context.Context) error
	// PostgresActive reports whether the Postgres unit is running, which a failed compute
	// needs to be reconfigured.
	PostgresActive(ctx context.Context) (bool, error)
}

// ConfigWriter stores the raw body of POST /configure for compute-init, atomically.
type ConfigWriter func(raw []byte) error

// Config holds the dependencies of a Server.
type Config struct {
	Store Store
	// Waker may be nil: then state changes are noticed only by rechecking.
	Waker Waker
	Units Units
	// WritePendingConfig is called under the state lock, before the status leaves empty.
	WritePendingConfig ConfigWriter
	// Verifier checks tokens on the external port. Nil refuses every token (401), as
	// compute_ctl does with an empty key set. It can be replaced with SetVerifier.
	Verifier *auth.Verifier
	// ComputeID is this compute's ID; SetJWKS builds verifiers for it.
	ComputeID string
	// BuildTag is the build_tag label of compute_ctl_up.
	BuildTag string
	// ParseConfig parses a ComputeConfig (default spec.ParseConfig); its errors are
	// answered with 422, as compute_ctl answers body deserialization errors.
	ParseConfig func([]byte) (*spec.ComputeConfig, error)
	// ParseSpec validates a spec (default spec.Parse); its errors are answered with 400.
	ParseSpec func(*spec.ComputeSpec) (*spec.Parsed, error)
	Logger    *slog.Logger
	// Recheck is how often a blocked request re-reads the state even without a wake-up
	// (a safety net against a lost signal). Default 3 s.
	Recheck time.Duration
	// MaxBodyBytes limits request bodies (default 16 MiB; larger → 413).
	MaxBodyBytes int64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// InternalRoutes, if set, registers more routes on the internal port's mux (e.g.
	// extensions.Routes for /extension_server); they get the port's middleware.
	InternalRoutes func(mux *http.ServeMux)
	// ReadAppliedConfig returns the config the compute runs with (for WatchTLS).
	ReadAppliedConfig func() ([]byte, error)
}

// DefaultMaxBodyBytes is the default request body limit.
const DefaultMaxBodyBytes = 16 << 20

// Server holds the handlers of both ports.
type Server struct {
	cfg      Config
	log      *slog.Logger
	verifier atomic.Pointer[auth.Verifier]
	started  time.Time
	registry *prometheus.Registry
	external http.Handler
	internal http.Handler
	// tlsTried is the certificate digest WatchTLS last reconfigured for (its goroutine
	// only).
	tlsTried string
}

// New builds a Server. Nil optional fields get their defaults.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ParseConfig == nil {
		cfg.ParseConfig = spec.ParseConfig
	}
	if cfg.ParseSpec == nil {
		cfg.ParseSpec = spec.Parse
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 3 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, started: cfg.Now().UTC()}
	s.verifier.Store(cfg.Verifier)
	s.registry = s.newRegistry()
	s.external = s.buildExternal()
	s.internal = s.buildInternal()
	return s
}

// External is the handler of the external port.
func (s *Server) External() http.Handler { return s.external }

// Internal is the handler of the internal port.
func (s *Server) Internal() http.Handler { return s.internal }

// SetVerifier replaces the token verifier (for example once the first config with its
// JWKS is known). Safe to call while serving.
func (s *Server) SetVerifier(v *auth.Verifier) { s.verifier.Store(v) }

// SetJWKS builds a verifier for cfg.ComputeID from a key set and installs it.
func (s *Server) SetJWKS(jwks json.RawMessage) error {
	v, err := auth.NewVerifier(jwks, s.cfg.ComputeID, auth.WithLogger(s.log))
	if err != nil {
		return err
	}
	s.SetVerifier(v)
	return nil
}

func (s *Server) buildExternal() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /status", s.authed(s.handleStatus))
	mux.Handle("GET /metrics.json", s.authed(s.handleMetricsJSON))
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.Handle("POST /configure", s.authed(s.handleConfigure))
	mux.Handle("POST /terminate", s.authed(s.handleTerminate))
	return s.middleware("external", mux)
}

func (s *Server) buildInternal() http.Handler {
	// Routes without authentication. /extension_server comes through cfg.InternalRoutes;
	// /extensions, /grants and /failpoints will be registered here.
	mux := http.NewServeMux()
	if s.cfg.InternalRoutes != nil {
		s.cfg.InternalRoutes(mux)
	}
	return s.middleware("internal", mux)
}

// authed wraps a handler with the JWT check.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := s.verifier.Load().Authorize(r.Header.Get("Authorization")); e != nil {
			s.log.Warn("request refused", "path", r.URL.Path, "status", e.Status, "reason", e.Message,
				"request_id", r.Header.Get(requestIDHeader))
			httpjson.Error(w, e.Status, e.Message)
			return
		}
		h(w, r)
	})
}

// load reads the record; before compute-init wrote one, the compute is empty since the
// API started.
func (s *Server) load() (state.Record, error) {
	rec, err := s.cfg.Store.Load()
	if errors.Is(err, state.ErrNoState) {
		return state.Record{Status: state.Empty, StartTime: s.started}, nil
	}
	return rec, err
}

// subscribe returns a wake-up channel (nil, which never fires, without a Waker).
func (s *Server) postgresActive(ctx context.Context) (bool, error) {
	if s.cfg.Units == nil {
		return false, errors.New("no systemd units configured")
	}
	return s.cfg.Units.PostgresActive(ctx)
}

func (s *Server) subscribe() (<-chan struct{}, func()) {
	if s.cfg.Waker == nil {
		return nil, func() {}
	}
	return s.cfg.Waker.Subscribe()
}

// errorText is the record's error, or "unknown error".
func errorText(r state.Record) string {
	if r.Error == nil {
		return "unknown error"
	}
	return *r.Error
}

func internalError(what string, err error) string { return fmt.Sprintf("%s: %v", what, err) }
