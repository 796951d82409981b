// Command compute-api serves Neon's compute HTTP API (unit compute-api.service): the
// external port with JWT auth and the internal port on loopback. It also has developer
// helpers to make an Ed25519 key set and mint tokens for it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/api"
	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/version"
)

type cli struct {
	Serve  serveCmd  `cmd:"" default:"withargs" help:"Serve the API (compute-api.service)."`
	Keygen keygenCmd `cmd:"" help:"Make an Ed25519 key: the JWKS for compute_ctl_config and the private key for 'token'."`
	Token  tokenCmd  `cmd:"" help:"Mint a JWT with a private key made by keygen."`
}

type serveCmd struct {
	StateDir         string        `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"/run/compute" help:"Directory of the shared state record."`
	Config           string        `short:"c" name:"config" env:"COMPUTE_CONFIG" default:"/etc/compute/config.json" help:"ComputeConfig file; its compute_ctl_config.jwks verifies tokens."`
	ComputeID        string        `short:"i" name:"compute-id" env:"COMPUTE_ID" default:"compute-local" help:"Compute ID that tokens must name."`
	ExternalHTTPPort int           `name:"external-http-port" env:"EXTERNAL_HTTP_PORT" default:"3080" help:"External port (JWT)."`
	InternalHTTPPort int           `name:"internal-http-port" env:"INTERNAL_HTTP_PORT" default:"3081" help:"Internal port (no auth)."`
	InternalHTTPAddr string        `name:"internal-http-addr" env:"INTERNAL_HTTP_ADDR" default:"127.0.0.1" help:"Address of the internal port (Neon binds all interfaces; we default to loopback)."`
	PGBin            string        `short:"b" name:"pgbin" env:"PGBIN" default:"/usr/lib/postgresql/15/bin/postgres" help:"Path of the postgres binary (its pg_config gives the extension directories)."`
	RemoteExtBaseURL string        `short:"r" name:"remote-ext-base-url" env:"REMOTE_EXT_BASE_URL" help:"Base URL of the extension gateway (POST /extension_server on the internal port)."`
	ExternalHTTPAddr string        `name:"external-http-addr" env:"EXTERNAL_HTTP_ADDR" default:"" help:"Address of the external port (default: all interfaces)."`
	TLSPoll          time.Duration `name:"tls-poll-interval" env:"COMPUTE_TLS_POLL_INTERVAL" default:"60s" help:"How often to look for a renewed TLS certificate (compute_ctl_config.tls with feature tls_experimental)."`
}

// units stops and starts compute units through systemd's manager API.
type units struct{ m *sysd.Manager }

func (u units) StopPostgres(ctx context.Context, immediate bool) error {
	if immediate {
		// SIGQUIT is Postgres's immediate shutdown; the stop job then waits for the end.
		if err := u.m.KillUnit(ctx, paths.UnitPostgres, "main", syscall.SIGQUIT); err != nil {
			return err
		}
	}
	return u.m.StopUnit(ctx, paths.UnitPostgres)
}

func (u units) CancelStartup(ctx context.Context) error {
	return u.m.StopUnit(ctx, paths.UnitInit)
}

func (u units) Reconfigure(ctx context.Context) error {
	return u.m.RestartUnit(ctx, paths.UnitConfigure)
}

func (u units) PostgresActive(ctx context.Context) (bool, error) {
	st, err := u.m.ActiveState(ctx, paths.UnitPostgres)
	return st == "active", err
}

func (s serveCmd) Run(ctx context.Context) error {
	store, err := state.Open(s.StateDir)
	if err != nil {
		return err
	}
	// Connect to systemd while the bus name is being claimed: both are on the start path.
	type mgrResult struct {
		m   *sysd.Manager
		err error
	}
	mgrc := make(chan mgrResult, 1)
	go func() {
		m, err := sysd.NewManager(ctx)
		mgrc <- mgrResult{m, err}
	}()
	conn, err := bus.Connect(ctx)
	if err != nil {
		if r := <-mgrc; r.m != nil {
			r.m.Close()
		}
		return fmt.Errorf("connect to the system bus: %w", err)
	}
	defer conn.Close()
	if err := conn.ClaimName(); err != nil {
		return err
	}
	store.OnChange = func(r state.Record) {
		if err := conn.EmitStatusChanged(string(r.Status), r.Seq); err != nil {
			slog.Warn("announce status", "err", err)
		}
	}
	if err := conn.ServeStatus(func() string {
		r, err := store.Load()
		if err != nil {
			return string(state.Empty)
		}
		return string(r.Status)
	}); err != nil {
		return err
	}
	mr := <-mgrc
	if mr.err != nil {
		return fmt.Errorf("connect to systemd: %w", mr.err)
	}
	mgr := mr.m
	defer mgr.Close()
	// A queued start of compute-init means compute.target is being (re)started: a new
	// lifecycle begins, and compute-init (started in parallel, not after us) resets a
	// record left by the previous one. So that nothing of the previous lifecycle (a failed
	// or terminated status) is served once `systemctl start compute.target` returns, READY
	// waits until the record carries compute-init's current invocation ID. When the API
	// restarts alone, there is no such job and nothing to wait for.
	if starting, err := mgr.PendingStart(ctx, paths.UnitInit); err != nil {
		slog.Warn("could not tell whether the compute is starting", "err", err)
	} else if starting {
		waitForLifecycle(ctx, store, conn, mgr)
	}

	verifier, err := loadVerifier(s.Config, s.ComputeID)
	if err != nil {
		return err
	}
	// Remote extensions on the internal port. Without a gateway URL the route answers
	// 412 (remote storage is not configured) and pg_config is not even run.
	dl := &extensions.Downloader{}
	if s.RemoteExtBaseURL != "" {
		u, err := controlplane.NormalizeRemoteExtURL(s.RemoteExtBaseURL)
		if err != nil {
			return fmt.Errorf("--remote-ext-base-url: %w", err)
		}
		pc, err := extensions.DiscoverPGConfig(ctx, paths.Sibling(s.PGBin, "pg_config"))
		if err != nil {
			return err
		}
		dl = &extensions.Downloader{BaseURL: u, BuildTag: version.BuildTag, PGMajor: pc.Major,
			PkgLibDir: pc.PkgLibDir, ShareDir: pc.ShareDir, Client: &http.Client{Timeout: 5 * time.Minute},
			OnRequest: store.RemoteExtRequestHook()}
	}
	ctl := control.New(control.Config{
		Store: store, Waker: conn, Units: units{mgr},
		WritePendingConfig: func(raw []byte) error {
			return atomicfile.Write(paths.PendingConfigFile(s.StateDir), raw, atomicfile.Options{Mode: 0o640})
		},
		ReadAppliedConfig: func() ([]byte, error) { return os.ReadFile(paths.SpecFile(s.StateDir)) },
		Logger:            slog.Default(),
	})
	srv := api.New(api.Config{
		Control:         ctl,
		ExtensionServer: extensions.NewHandler(specFile(paths.SpecFile(s.StateDir)), dl),
		Verifier:        verifier, ComputeID: s.ComputeID, BuildTag: version.BuildTag,
		Logger: slog.Default(),
	})

	go watchJWKS(ctx, conn, srv, paths.JWKSFile(s.StateDir))
	go ctl.WatchTLS(ctx, s.TLSPoll)

	extLn, err := net.Listen("tcp", net.JoinHostPort(s.ExternalHTTPAddr, strconv.Itoa(s.ExternalHTTPPort)))
	if err != nil {
		return fmt.Errorf("listen on the external port: %w", err)
	}
	intLn, err := net.Listen("tcp", net.JoinHostPort(s.InternalHTTPAddr, strconv.Itoa(s.InternalHTTPPort)))
	if err != nil {
		extLn.Close()
		return fmt.Errorf("listen on the internal port: %w", err)
	}
	servers := []*http.Server{
		{Handler: srv.External(), ReadHeaderTimeout: 10 * time.Second},
		{Handler: srv.Internal(), ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, 2)
	for i, ln := range []net.Listener{extLn, intLn} {
		go func(h *http.Server, ln net.Listener) {
			if err := h.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(servers[i], ln)
	}
	rec, _ := store.Load()
	slog.Info("compute-api listening", "external", extLn.Addr().String(), "internal", intLn.Addr().String(),
		"compute_id", s.ComputeID, "status", rec.Status, "version", version.Version)
	_ = sysd.Ready(fmt.Sprintf("serving on %s and %s", extLn.Addr(), intLn.Addr()))

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	_ = sysd.Stopping()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, h := range servers {
		_ = h.Shutdown(shutdownCtx)
	}
	return err
}

// loadVerifier takes the JWKS from the config file. Without the file (or keys) every
// token is refused with 401, as compute_ctl does with an empty key set.
func loadVerifier(path, computeID string) (*auth.Verifier, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		slog.Warn("no config file: no keys, every token is refused", "path", path)
		return auth.NewVerifier(nil, computeID)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	jwks, err := extractJWKS(b)
	if err != nil {
		// The API must still come up to report the failure compute-init records.
		slog.Error("config file has no usable compute_ctl_config.jwks: every token is refused", "path", path, "err", err)
		return auth.NewVerifier(nil, computeID)
	}
	return auth.NewVerifier(jwks, computeID)
}

// waitForLifecycle waits (at most 10 s) until compute-init has marked the state record as
// its own, re-checking on every status signal and every 20 ms.
func waitForLifecycle(ctx context.Context, store *state.Store, w interface {
	Subscribe() (<-chan struct{}, func())
}, mgr *sysd.Manager) {
	wake, cancel := w.Subscribe()
	defer cancel()
	wctx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	_, err := store.Wait(wctx, wake, 20*time.Millisecond, func(r state.Record) bool {
		// The unit keeps its last invocation ID until it starts again: only once its job
		// has left the queue is the ID the new run's.
		if waiting, err := mgr.StartWaiting(wctx, paths.UnitInit); err != nil || waiting {
			return false
		}
		inv, err := mgr.InvocationID(wctx, paths.UnitInit)
		return err == nil && inv != "" && r.InitInvocation == inv
	})
	if err != nil {
		slog.Warn("compute-init has not begun the new lifecycle yet; serving anyway", "err", err)
		return
	}
	slog.Info("compute is starting: new lifecycle begun")
}

// specFile reads the running compute's spec for the extension server.
type specFile string

func (p specFile) CurrentSpec() (*spec.ComputeSpec, error) {
	b, err := os.ReadFile(string(p))
	if err != nil {
		return nil, err
	}
	cc, err := spec.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", string(p), err)
	}
	return cc.Spec, nil
}

// watchJWKS installs the key set compute-init leaves in the state directory when the
// config comes from the control plane (there is no config file with keys then). It checks
// at start and whenever the state changes.
func watchJWKS(ctx context.Context, w interface {
	Subscribe() (<-chan struct{}, func())
}, srv *api.Server, path string) {
	wake, cancel := w.Subscribe()
	defer cancel()
	var loaded time.Time
	for {
		if fi, err := os.Stat(path); err == nil && fi.ModTime().After(loaded) {
			if b, err := os.ReadFile(path); err == nil {
				if err := srv.SetJWKS(b); err != nil {
					slog.Error("jwks from the control plane is unusable", "err", err)
				} else {
					slog.Info("installed the jwks from the control plane", "path", path)
				}
				loaded = fi.ModTime()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
	}
}

func main() {
	logx.Setup(os.Stderr, "compute-api")
	var c cli
	kctx := kong.Parse(&c, kong.Name("compute-api"),
		kong.Description("Neon-compatible compute HTTP API."), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(); err != nil {
		slog.Error("compute-api "+kctx.Command()+" failed", "err", err)
		os.Exit(1)
	}
}
