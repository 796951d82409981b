// Package apiserver runs `compute-api serve`: it connects to the system bus (claiming our
// name, announcing status changes, serving GetStatus) and to systemd, waits for a starting
// compute to begin its new lifecycle (the readiness handshake), builds the HTTP API of
// internal/api with its collaborators (token verifier, unit adapter, extension server),
// runs the background tasks (the JWKS from the control plane, the renewed TLS certificate
// watcher, the post-termination action of COMPUTE_ON_TERMINATED: it is the unit that serves
// the final status during compute_ctl's linger and holds the systemd connection; and the
// controller's promotions, begun by POST /promote but not bound to it),
// serves both ports, tells systemd READY=1, and on shutdown stops the HTTP servers and
// joins every goroutine it started before returning.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/computetools/compute-tools/internal/api"
	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgops"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/version"
)

// Settings are the settings of the serve command.
type Settings struct {
	// StateDir holds the state record and the pending and applied configs.
	StateDir string
	// ConfigFile is the ComputeConfig file whose compute_ctl_config.jwks verifies tokens.
	ConfigFile string
	// ControlPlaneURI, when set, is where the key set comes from instead (the
	// compute_ctl_config.jwks of the control plane's answer, fetched by compute-api
	// itself), with ControlPlaneToken as the bearer token.
	ControlPlaneURI, ControlPlaneToken string
	// ComputeID is the compute ID tokens must name.
	ComputeID string
	// ExternalAddr and InternalAddr are the host:port of the two ports.
	ExternalAddr, InternalAddr string
	// InternalUsers are the local OS users (names or uids) whose connections the
	// internal port serves on its routes that are not admin ones (/extension_server);
	// "*" is every local user; empty is paths.DefaultInternalHTTPUsers (peerGuard).
	InternalUsers []string
	// InternalAdminUsers are those of the admin routes (POST /extensions and /grants,
	// which act as the admin role); empty is paths.DefaultInternalHTTPAdminUsers.
	InternalAdminUsers []string
	// PGBin is the postgres binary (its pg_config gives the extension directories).
	PGBin string
	// RemoteExtBaseURL is the extension gateway as given; empty: /extension_server
	// answers 412 and pg_config is not run.
	RemoteExtBaseURL string
	// RemoteExtAllowHTTP lets RemoteExtBaseURL be plain http://.
	RemoteExtAllowHTTP bool
	// TLSPoll is how often the TLS watcher looks for a renewed certificate.
	TLSPoll time.Duration
	// OnTerminated is done once the compute is terminated or its start failed, after
	// compute_ctl's linger (control.WatchEnd); empty: control.EndNone.
	OnTerminated control.EndAction
	// ControlPlaneTimeout bounds one request to the control plane: for the key set, and
	// for the fresh spec of POST /refresh_configuration (0:
	// controlplane.DefaultRequestTimeout).
	ControlPlaneTimeout time.Duration
	// Connstr is the admin connection string of the routes that read or change the
	// running Postgres (internal/pgops; pg_dump runs beside PGBin) and of POST /promote.
	// Empty: those routes answer 500.
	Connstr string
	// PgbouncerPidFile and LocalProxyPidFile find pgbouncer and local_proxy when they
	// are not active units, to stop them at /terminate (empty: not looked for).
	PgbouncerPidFile, LocalProxyPidFile string
	// HTTP holds the servers' limits; zero fields take the defaults of internal/paths.
	HTTP HTTPLimits
}

// HTTPLimits are the timeouts and bounds of the HTTP servers (see internal/paths for
// what each means and its default).
type HTTPLimits struct {
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConnections bounds the external port's connections (connLimit).
	MaxConnections int
	// MaxBodyBytes and ConfigureParses are api.Options'.
	MaxBodyBytes    int64
	ConfigureParses int
}

// withDefaults fills the zero fields from internal/paths.
func (h HTTPLimits) withDefaults() HTTPLimits {
	dur := func(d *time.Duration, def string) {
		if *d <= 0 {
			*d, _ = time.ParseDuration(def) // constants, checked by a test
		}
	}
	dur(&h.ReadHeaderTimeout, paths.DefaultAPIReadHeaderTimeout)
	dur(&h.ReadTimeout, paths.DefaultAPIReadTimeout)
	dur(&h.WriteTimeout, paths.DefaultAPIWriteTimeout)
	dur(&h.IdleTimeout, paths.DefaultAPIIdleTimeout)
	if h.MaxConnections <= 0 {
		h.MaxConnections = paths.DefaultAPIMaxConnections
	}
	if h.MaxBodyBytes <= 0 {
		h.MaxBodyBytes = paths.DefaultAPIMaxBodyBytes
	}
	if h.ConfigureParses <= 0 {
		h.ConfigureParses = paths.DefaultAPIConfigureParses
	}
	return h
}

// httpServer is one port's server with the limits' timeouts.
func (h HTTPLimits) httpServer(handler http.Handler) *http.Server {
	return &http.Server{Handler: handler, ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
		WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxHeaderBytes: maxHeaderBytes}
}

// maxHeaderBytes bounds a request's headers (a JWT and a few short headers need a few KB;
// net/http's default is 1 MB).
const maxHeaderBytes = 64 << 10

// Systemd is the part of systemd's manager API the server uses (*sysd.Manager).
type Systemd interface {
	unitManager
	PendingStart(ctx context.Context, name string) (bool, error)
	StartWaiting(ctx context.Context, name string) (bool, error)
	InvocationID(ctx context.Context, name string) (string, error)
}

// Notifier tells systemd about the service's state (sd_notify).
type Notifier interface {
	Ready(status string) error
	Stopping() error
}

// Deps are the collaborators of Serve.
type Deps struct {
	Store *state.Store
	// Bus wakes waiters on status changes (*bus.Conn); required.
	Bus control.Waker
	// LFC reaches compute-monitor's LFC methods (*bus.Conn); nil: the LFC routes answer
	// 503.
	LFC     control.LFC
	Systemd Systemd
	// Notify defaults to sd_notify.
	Notify Notifier
	// Listen opens the ports (default net.Listen).
	Listen func(network, address string) (net.Listener, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// BusLost, when set, is closed when the bus connection is lost (*bus.Conn.Done):
	// Serve then ends with an error, and systemd restarts compute-api, which connects
	// again. A call to systemd that fails because that connection is lost
	// (sysd.ErrDisconnected) ends Serve the same way.
	BusLost <-chan struct{}
}

// Run connects (Connect), serves until ctx ends (Serve) and disconnects; log is the
// component's logger (nil: slog.Default()).
func Run(ctx context.Context, cfg Settings, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	d, disconnect, err := Connect(ctx, cfg.StateDir, log)
	if err != nil {
		return err
	}
	defer disconnect()
	return Serve(ctx, cfg, d)
}

// Connect opens the state store, connects to the system bus (claiming our name, so that
// status changes are announced and GetStatus is served) and, at the same time, to
// systemd. disconnect closes both. log reports failed announcements.
func Connect(ctx context.Context, stateDir string, log *slog.Logger) (d Deps, disconnect func(), err error) {
	return connect(ctx, stateDir, log, func(ctx context.Context) (systemdConn, error) {
		m, err := sysd.NewManager(ctx)
		if err != nil {
			return nil, err
		}
		return m, nil
	})
}

// systemdConn is a systemd connection to close when done (*sysd.Manager).
type systemdConn interface {
	Systemd
	Close()
}

func connect(ctx context.Context, stateDir string, log *slog.Logger, dialSystemd func(context.Context) (systemdConn, error)) (Deps, func(), error) {
	store, err := state.Open(stateDir)
	if err != nil {
		return Deps{}, nil, err
	}
	store.Log = log
	// Connect to systemd while the bus name is being claimed: both are on the start path.
	type mgrResult struct {
		m   systemdConn
		err error
	}
	mgrc := make(chan mgrResult, 1)
	go func() {
		m, err := dialSystemd(ctx)
		mgrc <- mgrResult{m, err}
	}()
	closeMgr := func() {
		if r := <-mgrc; r.m != nil {
			r.m.Close()
		}
	}
	conn, err := bus.Connect(ctx)
	if err != nil {
		closeMgr()
		return Deps{}, nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	conn.Log = log
	fail := func(err error) (Deps, func(), error) {
		closeMgr()
		conn.Close()
		return Deps{}, nil, err
	}
	if err := conn.ClaimName(); err != nil {
		return fail(err)
	}
	store.Announce(conn.EmitStatusChanged)
	if err := conn.ServeStatus(func() string {
		r, err := store.Load()
		if err != nil {
			return string(state.Empty)
		}
		return string(r.Status)
	}); err != nil {
		return fail(err)
	}
	mr := <-mgrc
	if mr.err != nil {
		conn.Close()
		return Deps{}, nil, fmt.Errorf("connect to systemd: %w", mr.err)
	}
	return Deps{Store: store, Bus: conn, LFC: conn, Systemd: mr.m, Logger: log, BusLost: conn.Done()}, func() {
		mr.m.Close()
		conn.Close()
	}, nil
}

// shutdownTimeout bounds the wait for open requests when the server stops.
const shutdownTimeout = 5 * time.Second

// Serve runs the API until ctx ends or a port fails, and returns only once every
// goroutine it started (servers and watchers) has stopped.
func Serve(ctx context.Context, cfg Settings, d Deps) error {
	return newServer(cfg, d).serve(ctx)
}

// server is one run of Serve.
type server struct {
	cfg Settings
	d   Deps
	log *slog.Logger
	// tasks are the goroutines of the run; serve waits for them.
	tasks group
	// limit bounds the external port's connections (set by serve).
	limit atomic.Pointer[connLimit]
}

// limitOpen is the number of open connections of the external port (tests).
func (s *server) limitOpen() int {
	if l := s.limit.Load(); l != nil {
		return l.open()
	}
	return 0
}

func newServer(cfg Settings, d Deps) *server {
	if d.Notify == nil {
		d.Notify = sdNotify{}
	}
	if d.Listen == nil {
		d.Listen = net.Listen
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	cfg.HTTP = cfg.HTTP.withDefaults()
	return &server{cfg: cfg, d: d, log: d.Logger}
}

func (s *server) serve(ctx context.Context) (err error) {
	// A queued start of compute-init means compute.target is being (re)started: a new
	// lifecycle begins, and compute-init (started in parallel, not after us) resets a
	// record left by the previous one. So that nothing of the previous lifecycle (a failed
	// or terminated status) is served once `systemctl start compute.target` returns, READY
	// waits until the record carries compute-init's current invocation ID. When the API
	// restarts alone, there is no such job and nothing to wait for.
	if starting, err := s.d.Systemd.PendingStart(ctx, paths.UnitInit); err != nil {
		s.log.Warn("could not tell whether the compute is starting", "err", err)
	} else if starting {
		waitForLifecycle(ctx, s.d.Store, s.d.Bus, s.d.Systemd, lifecycleTimeout, s.log)
	}

	verifier, err := loadVerifier(s.cfg.ConfigFile, s.cfg.ComputeID, s.log)
	if err != nil {
		return err
	}
	dl, err := s.downloader(ctx)
	if err != nil {
		return err
	}
	var pgOps control.Postgres
	if s.cfg.Connstr != "" {
		ops, err := pgops.New(s.cfg.Connstr, s.cfg.PGBin, s.log)
		if err != nil {
			return fmt.Errorf("--connstr: %w", err)
		}
		pgOps = ops
	}
	sdLost := make(chan error, 1)
	bgctx, stopBackground := context.WithCancel(ctx)
	defer func() {
		stopBackground()
		// A watcher or a promotion may be in the middle of a reconfiguration it
		// started (waiting for compute-configure's job, which it must not cancel: that
		// would record a failure while the step still runs). Wait for it, but not
		// past shutdownTimeout: systemd would kill us anyway, and the step goes on.
		if !s.tasks.WaitTimeout(shutdownTimeout) {
			_, running := s.tasks.counts()
			s.log.Warn("background tasks still running at shutdown; not waiting longer", "running", running)
		}
	}()
	// The control plane's config: the JWKS at start (fetchJWKS) and the fresh spec of
	// POST /refresh_configuration.
	var fetch func(ctx context.Context) (*spec.ComputeConfig, error)
	if s.cfg.ControlPlaneURI != "" {
		fetch = func(ctx context.Context) (*spec.ComputeConfig, error) {
			return controlplane.FetchConfig(ctx, controlplane.NewClient(s.cfg.ControlPlaneTimeout), s.cfg.ControlPlaneURI, s.cfg.ComputeID, s.cfg.ControlPlaneToken,
				controlplane.WithOnRequest(s.d.Store.CplaneRequestHook(controlplane.RPCGetConfig)),
				controlplane.WithLogger(s.log))
		}
	}
	ctl := control.New(control.Deps{
		Postgres: pgOps,
		Store:    s.d.Store, Waker: s.d.Bus, Units: lossWatch{units{s.d.Systemd}, sdLost}, LFC: s.d.LFC,
		WritePendingConfig: func(raw []byte) error {
			return atomicfile.Write(paths.PendingConfigFile(s.cfg.StateDir), raw, atomicfile.Options{Mode: 0o640})
		},
		ReadAppliedConfig: func() ([]byte, error) {
			return atomicfile.ReadFile(paths.AppliedConfigFile(s.cfg.StateDir), maxConfig)
		},
		Promoter:    promote.New(promote.Options{Connstr: s.cfg.Connstr, Logger: s.log}),
		Companions:  newCompanions(s.d.Systemd, s.cfg.PgbouncerPidFile, s.cfg.LocalProxyPidFile, s.log),
		Tasks:       serverTasks{g: &s.tasks, ctx: bgctx},
		FetchConfig: fetch,
		Logger:      s.log,
	})
	// The internal port has no authentication: only the allowed local users' connections
	// are served (peerGuard).
	guard := newPeerGuard(s.cfg.InternalUsers, s.cfg.InternalAdminUsers, s.log)
	srv := api.New(api.Options{
		InternalCaller:  guard.allow,
		Control:         ctl,
		ExtensionServer: extensions.NewHandler(appliedConfigFile(paths.AppliedConfigFile(s.cfg.StateDir)), dl),
		Verifier:        verifier, ComputeID: s.cfg.ComputeID, BuildTag: version.BuildTag,
		Logger: s.log, MaxBodyBytes: s.cfg.HTTP.MaxBodyBytes, ConfigureParses: s.cfg.HTTP.ConfigureParses,
	})

	if fetch != nil {
		s.tasks.Go(func() { fetchJWKS(bgctx, fetch, srv.SetJWKS, jwksRetry, s.log) })
	}
	s.tasks.Go(func() { ctl.WatchTLS(bgctx, s.cfg.TLSPoll) })
	endWatch := ctl.WatchEnd(s.cfg.OnTerminated, units{s.d.Systemd}, nil)
	s.tasks.Go(func() { endWatch(bgctx) })

	extLn, err := s.d.Listen("tcp", s.cfg.ExternalAddr)
	if err != nil {
		return fmt.Errorf("listen on the external port: %w", err)
	}
	intLn, err := s.d.Listen("tcp", s.cfg.InternalAddr)
	if err != nil {
		extLn.Close()
		return fmt.Errorf("listen on the internal port: %w", err)
	}
	// Requests that move the record wait for the reconciliation below (started once the
	// servers are).
	ctl.HoldUntilReconciled()
	// The external port is reachable from outside: its connections are bounded. The
	// internal one (loopback, Postgres's extension requests) has the timeouts only.
	limit := newConnLimit(s.cfg.HTTP.MaxConnections)
	s.limit.Store(limit)
	ext := s.cfg.HTTP.httpServer(limit.track(srv.External()))
	ext.ConnContext, ext.ConnState = connContext, limit.connState
	internal := s.cfg.HTTP.httpServer(srv.Internal())
	internal.ConnContext = guard.connContext
	servers := []*http.Server{ext, internal}
	errc := make(chan error, len(servers))
	for i, ln := range []net.Listener{limit.listener(extLn), intLn} {
		h := servers[i]
		s.tasks.Go(func() {
			if err := h.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	// An earlier compute-api killed halfway through /configure or /terminate left the
	// record pending: finish what it started (control.Reconcile; one file read when
	// nothing is pending). It runs beside the servers, not before them: the unit job it
	// waits for (a configure step, a Postgres stop) can take minutes, and /status must
	// answer and READY=1 go out meanwhile. No request races it: /configure, /terminate
	// and /promote wait until it has run (HoldUntilReconciled). The unit calls are not
	// cancelled at shutdown: a stop job cut short would be recorded as a failure while
	// systemd carries it out.
	s.tasks.Go(func() { reconcile(context.WithoutCancel(ctx), ctl, s.log) })
	rec, _ := s.d.Store.Load()
	s.log.Info("compute-api listening", "external", extLn.Addr().String(), "internal", intLn.Addr().String(),
		"compute_id", s.cfg.ComputeID, "status", rec.Status, "version", version.Version, "build_tag", version.BuildTag)
	_ = s.d.Notify.Ready(fmt.Sprintf("serving on %s and %s", extLn.Addr(), intLn.Addr()))

	select {
	case <-ctx.Done():
	case err = <-errc:
	case <-s.d.BusLost:
		if ctx.Err() == nil {
			err = errors.New("the connection to the system bus is lost (dbus-daemon restarted?): exiting so that systemd restarts compute-api, which connects again")
			s.log.Error("bus connection lost", "err", err)
		}
	case lost := <-sdLost:
		err = fmt.Errorf("%w: exiting so that systemd restarts compute-api, which connects again", lost)
		s.log.Error("systemd connection lost", "err", err)
	}
	_ = s.d.Notify.Stopping()
	stopBackground()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, h := range servers {
		_ = h.Shutdown(shutdownCtx)
	}
	return err
}

// reconcile runs control.Reconcile once and logs its outcome.
func reconcile(ctx context.Context, ctl *control.Controller, log *slog.Logger) {
	action, err := ctl.Reconcile(ctx)
	switch {
	case err != nil:
		log.Error("reconcile the state record with the units", "action", action, "err", err)
	case action != control.ReconcileNone:
		log.Info("reconciled the state record with the units", "action", action)
	}
}

// downloader builds the extension downloader of /extension_server. Without a gateway URL
// the route answers 412 (remote storage is not configured) and pg_config is not even run.
func (s *server) downloader(ctx context.Context) (*extensions.Downloader, error) {
	if s.cfg.RemoteExtBaseURL == "" {
		return &extensions.Downloader{Logger: s.log}, nil
	}
	u, err := controlplane.NormalizeRemoteExtURL(s.cfg.RemoteExtBaseURL, s.cfg.RemoteExtAllowHTTP)
	if err != nil {
		return nil, fmt.Errorf("--remote-ext-base-url: %w", err)
	}
	dl, err := extensions.NewDownloader(ctx, s.cfg.PGBin, u, s.d.Store.RemoteExtRequestHook())
	if err != nil {
		return nil, err
	}
	dl.Logger = s.log
	return dl, nil
}

// group runs goroutines and waits for them; it counts the ones still running.
type group struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	started int
	running int
}

// Go runs fn in a goroutine of the group.
func (g *group) Go(fn func()) {
	g.mu.Lock()
	g.started++
	g.running++
	g.mu.Unlock()
	g.wg.Go(func() {
		defer func() {
			g.mu.Lock()
			g.running--
			g.mu.Unlock()
		}()
		fn()
	})
}

// Wait returns when every goroutine of the group has returned.
func (g *group) Wait() { g.wg.Wait() }

// WaitTimeout is Wait bounded by d; it reports whether every goroutine returned.
func (g *group) WaitTimeout(d time.Duration) bool {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// counts reports how many goroutines were started and how many still run.
func (g *group) counts() (started, running int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started, g.running
}

// serverTasks runs the controller's background work (a promotion) in the server's task
// group, under its background context: shutdown cancels it and waits for it as for every
// other task. Work that comes once shutdown has begun gets the cancelled context in a
// goroutine of its own (the group may be being waited for already): it ends at once.
type serverTasks struct {
	g   *group
	ctx context.Context
}

func (t serverTasks) Go(fn func(ctx context.Context)) {
	if t.ctx.Err() != nil {
		go fn(t.ctx)
		return
	}
	t.g.Go(func() { fn(t.ctx) })
}

// sdNotify is the Notifier of a systemd service.
type sdNotify struct{}

func (sdNotify) Ready(status string) error { return sysd.Ready(status) }
func (sdNotify) Stopping() error           { return sysd.Stopping() }
