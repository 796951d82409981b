// Package api serves compute-api's two HTTP ports with Neon compute_ctl's contract: the
// external port (JWT-protected, plus the open /metrics) and the internal port (no token;
// each request's caller is checked by Options.InternalCaller, which compute-api sets to
// the local users of INTERNAL_HTTP_USERS, and of INTERNAL_HTTP_ADMIN_USERS for the routes
// that act as the admin role, where compute_ctl serves every caller).
// It owns routing (the one route table of both ports, routes.go), authentication, the
// rules for request bodies (content type, size, JSON decoding of the wire types),
// the mapping of outcomes and errors to HTTP status codes, and metrics exposition. Routes
// that block until the compute moved (or that stream) are marked long in the route table:
// they lift the server's read and write deadlines once their request is read
// (deadlines.go); the servers' timeouts and connection limit are internal/apiserver's. What
// a route does is internal/control's, reached through the Control interface declared
// here; a new route is one handler here plus one control method.
//
// /metrics is served with Prometheus' client_golang (a private registry) rather than
// hand-written text, for a correct exposition format and content negotiation with the
// scraper; see metrics.go.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgops/pgopswire"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/prometheus/client_golang/prometheus"
)

// Control carries out what the routes do (*control.Controller implements it).
type Control interface {
	// Load reads the state record (an empty one before any was written). The record may
	// be shared with other calls: read it, never modify it.
	Load() (state.Record, error)
	// Configure stores a decoded and validated config and blocks until the compute is
	// running or failed.
	Configure(ctx context.Context, raw []byte, parsed *spec.Parsed) (state.Record, error)
	// Terminate terminates the compute and blocks until it is terminated or failed.
	Terminate(ctx context.Context, immediate bool) (control.Termination, error)
	// LFCStates returns the LFC prewarm and offload states compute-monitor published.
	LFCStates() (lfcstate.States, error)
	// LFCPrewarm, LFCOffload and LFCCancelPrewarm ask compute-monitor; a refusal is a
	// *lfcstate.RefusedError, no monitor lfcstate.ErrUnavailable.
	LFCPrewarm(ctx context.Context, fromEndpoint string) error
	LFCOffload(ctx context.Context) error
	LFCCancelPrewarm(ctx context.Context) (bool, error)
	// The Postgres routes: a status that forbids the call is a *state.WrongStatusError,
	// the operation's own failure a *control.PostgresError.
	CheckWritability(ctx context.Context) error
	Insights(ctx context.Context) (pgopswire.Insights, error)
	DBsAndRoles(ctx context.Context) (pgopswire.CatalogObjects, error)
	// DatabaseSchema streams the schema dump (pgopswire.ErrDatabaseNotFound: no such
	// database); the caller closes it.
	DatabaseSchema(ctx context.Context, db string) (io.ReadCloser, error)
	// DatabaseSchemaExists answers HEAD /database_schema without a dump: nil, or the
	// errors DatabaseSchema gives before its stream.
	DatabaseSchemaExists(ctx context.Context, db string) error
	InstallExtension(ctx context.Context, req pgopswire.ExtensionInstallRequest) (string, error)
	SetRoleGrants(ctx context.Context, req pgopswire.SetRoleGrantsRequest) error
	// RefreshConfiguration asks for a fresh spec from the control plane and returns at
	// once; a status that allows no refresh is a *state.RefreshRefusedError.
	RefreshConfiguration(ctx context.Context) error
	// Promote promotes a replica (or joins the promotion that runs) and returns its
	// outcome, completed or failed; a compute that is not running is a
	// *state.WrongStatusError.
	Promote(ctx context.Context, req promotestate.Request) (promotestate.State, error)
}

// Options holds the dependencies of a Server.
type Options struct {
	Control Control
	// ExtensionServer serves the internal port's POST /extension_server/{filename...}
	// (extensions.NewHandler); nil answers 404 there.
	ExtensionServer http.Handler
	// Verifier checks tokens on the external port. Nil refuses every token (401), as
	// compute_ctl does with an empty key set. It can be replaced with SetVerifier.
	Verifier *auth.Verifier
	// ComputeID is this compute's ID; SetJWKS builds verifiers for it.
	ComputeID string
	// BuildTag is the build_tag label of compute_ctl_up.
	BuildTag string
	Logger   *slog.Logger
	// MaxBodyBytes limits request bodies (default paths.DefaultAPIMaxBodyBytes, the
	// reference's 2 MB; larger → 413).
	MaxBodyBytes int64
	// ConfigureParses bounds the POST /configure bodies read and parsed at once (default
	// paths.DefaultAPIConfigureParses); the others wait for a turn.
	ConfigureParses int
	// InternalCaller checks the caller of each internal-port request (internal/apiserver:
	// the local user that owns the caller's socket); admin is true for the routes that
	// act as the admin role (POST /extensions and /grants), false for the others
	// (/extension_server, and paths no route serves). An error is answered 403
	// (CallerRefused or CallerRefusedAdmin) and logged. Nil serves every caller, as
	// compute_ctl does.
	InternalCaller func(r *http.Request, admin bool) error
}

// DefaultMaxBodyBytes is the default request body limit.
const DefaultMaxBodyBytes = paths.DefaultAPIMaxBodyBytes

// Server holds the handlers of both ports.
type Server struct {
	cfg      Options
	log      *slog.Logger
	verifier atomic.Pointer[auth.Verifier]
	registry *prometheus.Registry
	// lastGood is the last state record read without error, served by /status,
	// /metrics.json and /metrics when the file cannot be read (see record).
	lastGood atomic.Pointer[state.Record]
	// stale: the last read failed (the failure is logged once, and the recovery).
	stale    atomic.Bool
	external http.Handler
	internal http.Handler
	// adminRoutes are the patterns of the internal routes marked admin in routeTable.
	adminRoutes map[string]bool
	// parses admits the POST /configure bodies read and parsed at once.
	parses *gate
}

// New builds a Server. Nil optional fields get their defaults.
func New(cfg Options) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ConfigureParses <= 0 {
		cfg.ConfigureParses = paths.DefaultAPIConfigureParses
	}
	s := &Server{cfg: cfg, log: cfg.Logger, parses: newGate(cfg.ConfigureParses)}
	s.verifier.Store(cfg.Verifier)
	// A first good read, so that even the first request has something to fall back on.
	_, _ = s.record()
	s.registry = s.newRegistry()
	s.external, s.internal = s.routes()
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

// authed wraps a handler with the JWT check.
func (s *Server) authed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := s.verifier.Load().Authorize(r.Header.Get("Authorization")); e != nil {
			s.log.Warn("request refused", "path", r.URL.Path, "status", e.Status, "reason", e.Message,
				"request_id", r.Header.Get(requestIDHeader))
			httpjson.Error(w, e.Status, e.Message)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// record reads the state record. When the file cannot be read (gone, unreadable,
// corrupt), it logs the error and returns the last record read without error instead, as
// compute_ctl, whose state is in memory, always has one to serve; the error is returned
// only before any read succeeded.
func (s *Server) record() (state.Record, error) {
	rec, err := s.cfg.Control.Load()
	if err == nil {
		s.lastGood.Store(&rec)
		if s.stale.CompareAndSwap(true, false) {
			s.log.Info("state readable again", "status", rec.Status, "seq", rec.Seq)
		}
		return rec, nil
	}
	last := s.lastGood.Load()
	if last == nil {
		s.log.Error("read state", "err", err)
		return state.Record{}, err
	}
	if !s.stale.Swap(true) {
		s.log.Error("read state: serving the last record read until it is readable again",
			"err", err, "status", last.Status, "seq", last.Seq)
	}
	return *last, nil
}

func internalError(what string, err error) string { return fmt.Sprintf("%s: %v", what, err) }
