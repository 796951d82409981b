// Command compute-api serves Neon's compute HTTP API (unit compute-api.service): the
// external port with JWT auth and the internal port on loopback. It also has developer
// helpers to make an Ed25519 key set and mint tokens for it. The server runs in
// internal/apiserver; this file is the command line.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/apiserver"
	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
)

type cli struct {
	Serve  serveCmd  `cmd:"" default:"withargs" help:"Serve the API (compute-api.service)."`
	Keygen keygenCmd `cmd:"" help:"Make an Ed25519 key: the JWKS for compute_ctl_config and the private key for 'token'."`
	Token  tokenCmd  `cmd:"" help:"Mint a JWT with a private key made by keygen."`
}

type serveCmd struct {
	StateDir            string        `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"${COMPUTE_STATE_DIR}" help:"Directory of the shared state record."`
	Config              string        `short:"c" name:"config" env:"COMPUTE_CONFIG" default:"${COMPUTE_CONFIG}" help:"ComputeConfig file; its compute_ctl_config.jwks verifies tokens."`
	ComputeID           string        `short:"i" name:"compute-id" env:"COMPUTE_ID" default:"${COMPUTE_ID}" help:"Compute ID that tokens must name."`
	ExternalHTTPPort    int           `name:"external-http-port" env:"EXTERNAL_HTTP_PORT" default:"${EXTERNAL_HTTP_PORT}" help:"External port (JWT)."`
	InternalHTTPPort    int           `name:"internal-http-port" env:"INTERNAL_HTTP_PORT" default:"${INTERNAL_HTTP_PORT}" help:"Internal port (no token; only the local users of --internal-http-users)."`
	InternalHTTPAddr    string        `name:"internal-http-addr" env:"INTERNAL_HTTP_ADDR" default:"${INTERNAL_HTTP_ADDR}" help:"Address of the internal port (Neon binds all interfaces; we default to loopback)."`
	InternalHTTPUsers   []string      `name:"internal-http-users" env:"INTERNAL_HTTP_USERS" default:"${INTERNAL_HTTP_USERS}" help:"Local OS users whose connections the internal port serves on /extension_server (the owner of the caller's socket; others get 403); * for every local user."`
	InternalAdminUsers  []string      `name:"internal-http-admin-users" env:"INTERNAL_HTTP_ADMIN_USERS" default:"${INTERNAL_HTTP_ADMIN_USERS}" help:"Local OS users whose connections the internal port serves on POST /extensions and /grants (they act as the admin role; others get 403); add local_proxy's user (postgres lets SQL that makes HTTP requests in); * for every local user."`
	PGBin               string        `short:"b" name:"pgbin" env:"PGBIN" default:"${PGBIN}" help:"Path of the postgres binary (its pg_config gives the extension directories)."`
	RemoteExtBaseURL    string        `short:"r" name:"remote-ext-base-url" env:"REMOTE_EXT_BASE_URL" help:"Base URL of the extension gateway (POST /extension_server on the internal port; https://, http:// only with --remote-ext-allow-http)."`
	RemoteExtHTTP       bool          `name:"remote-ext-allow-http" env:"REMOTE_EXT_ALLOW_HTTP" help:"Allow a plain http:// extension gateway (the archives carry no checksum: only for a network you trust)."`
	ExternalHTTPAddr    string        `name:"external-http-addr" env:"EXTERNAL_HTTP_ADDR" default:"" help:"Address of the external port (default: all interfaces)."`
	ControlPlaneURI     string        `short:"p" name:"control-plane-uri" env:"CONTROL_PLANE_URI" help:"Get the key set that verifies tokens from the control plane (its answer's compute_ctl_config.jwks), as compute-init gets the spec; bearer token from the systemd credential compute-control-plane-token, or NEON_CONTROL_PLANE_TOKEN."`
	ControlPlaneTimeout time.Duration `name:"control-plane-timeout" env:"COMPUTE_CONTROL_PLANE_TIMEOUT" default:"${COMPUTE_CONTROL_PLANE_TIMEOUT}" help:"Bound of one request for the key set to the control plane."`
	Connstr             string        `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"${COMPUTE_CONNSTR}" help:"How to connect as the admin role (/check_writability, /insights, /dbs_and_roles, /database_schema, /extensions, /grants, /promote)."`
	TLSPoll             time.Duration `name:"tls-poll-interval" env:"COMPUTE_TLS_POLL_INTERVAL" default:"${COMPUTE_TLS_POLL_INTERVAL}" help:"How often to look for a renewed TLS certificate (compute_ctl_config.tls with feature tls_experimental)."`
	OnTerminated        string        `name:"on-terminated" env:"COMPUTE_ON_TERMINATED" default:"${COMPUTE_ON_TERMINATED}" enum:"stop,poweroff,none" help:"What to do once the compute is terminated or its start failed, after compute_ctl's linger (30 s; none after an immediate termination): stop compute.target, poweroff the machine through systemd, or none."`

	ReadHeaderTimeout time.Duration `name:"read-header-timeout" env:"COMPUTE_API_READ_HEADER_TIMEOUT" default:"${COMPUTE_API_READ_HEADER_TIMEOUT}" help:"Time allowed for a request's headers (both ports)."`
	ReadTimeout       time.Duration `name:"read-timeout" env:"COMPUTE_API_READ_TIMEOUT" default:"${COMPUTE_API_READ_TIMEOUT}" help:"Time allowed for a whole request (both ports)."`
	WriteTimeout      time.Duration `name:"write-timeout" env:"COMPUTE_API_WRITE_TIMEOUT" default:"${COMPUTE_API_WRITE_TIMEOUT}" help:"Time allowed for an answer; lifted for /configure, /terminate and /extension_server, which block until done."`
	IdleTimeout       time.Duration `name:"idle-timeout" env:"COMPUTE_API_IDLE_TIMEOUT" default:"${COMPUTE_API_IDLE_TIMEOUT}" help:"How long an idle kept-alive connection stays open."`
	MaxConnections    int           `name:"max-connections" env:"COMPUTE_API_MAX_CONNECTIONS" default:"${COMPUTE_API_MAX_CONNECTIONS}" help:"Open connections on the external port; past it the oldest one not being answered is closed."`
	MaxBodyBytes      int64         `name:"max-body-bytes" env:"COMPUTE_API_MAX_BODY_BYTES" default:"${COMPUTE_API_MAX_BODY_BYTES}" help:"Request body limit in bytes (larger: 413)."`
	ConfigureParses   int           `name:"configure-parses" env:"COMPUTE_API_CONFIGURE_PARSES" default:"${COMPUTE_API_CONFIGURE_PARSES}" help:"POST /configure bodies read and parsed at once."`

	PgbouncerPidFile  string `name:"pgbouncer-pid-file" env:"PGBOUNCER_PID_FILE" default:"${PGBOUNCER_PID_FILE}" help:"pgbouncer's pid file: /terminate kills that pgbouncer when pgbouncer.service is not active."`
	LocalProxyPidFile string `name:"local-proxy-pid-file" env:"LOCAL_PROXY_PID_FILE" default:"${LOCAL_PROXY_PID_FILE}" help:"local_proxy's pid file: /terminate sends SIGTERM to its pid when local_proxy.service is not active."`
}

func (s serveCmd) Run(ctx context.Context, log *slog.Logger) error {
	var token string
	if s.ControlPlaneURI != "" {
		t, err := controlplane.LoadToken(os.Getenv("CREDENTIALS_DIRECTORY"), os.Getenv(controlplane.TokenEnv), log)
		if err != nil {
			return err
		}
		token = t
	}
	onTerminated, err := control.ParseEndAction(s.OnTerminated)
	if err != nil {
		return err
	}
	checkPoweroffDropIn(onTerminated, paths.GeneratorDir, log)
	return apiserver.Run(ctx, apiserver.Settings{StateDir: s.StateDir, ConfigFile: s.Config, ComputeID: s.ComputeID,
		ExternalAddr: net.JoinHostPort(s.ExternalHTTPAddr, strconv.Itoa(s.ExternalHTTPPort)),
		InternalAddr: net.JoinHostPort(s.InternalHTTPAddr, strconv.Itoa(s.InternalHTTPPort)),
		PGBin:        s.PGBin, RemoteExtBaseURL: s.RemoteExtBaseURL, RemoteExtAllowHTTP: s.RemoteExtHTTP, TLSPoll: s.TLSPoll,
		ControlPlaneURI: s.ControlPlaneURI, ControlPlaneToken: token, ControlPlaneTimeout: s.ControlPlaneTimeout, OnTerminated: onTerminated, Connstr: s.Connstr,
		PgbouncerPidFile: s.PgbouncerPidFile, LocalProxyPidFile: s.LocalProxyPidFile, InternalUsers: s.InternalHTTPUsers,
		InternalAdminUsers: s.InternalAdminUsers,
		HTTP: apiserver.HTTPLimits{ReadHeaderTimeout: s.ReadHeaderTimeout, ReadTimeout: s.ReadTimeout,
			WriteTimeout: s.WriteTimeout, IdleTimeout: s.IdleTimeout, MaxConnections: s.MaxConnections,
			MaxBodyBytes: s.MaxBodyBytes, ConfigureParses: s.ConfigureParses}}, log)
}

type keygenCmd struct {
	KeyOut  string `required:"" help:"Where to write the private key (PEM, mode 0600)."`
	JWKSOut string `name:"jwks-out" required:"" help:"Where to write the JWKS (public key) for compute_ctl_config.jwks."`
}

func (k keygenCmd) Run() error {
	key, jwks, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(k.KeyOut, key, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return os.WriteFile(k.JWKSOut, jwks, 0o644)
}

type tokenCmd struct {
	Key       string        `required:"" help:"Private key file made by keygen."`
	ComputeID string        `name:"compute-id" help:"compute_id claim (for /status, /configure)."`
	Admin     bool          `help:"Admin scope with aud [\"compute\"] (for /terminate)."`
	TTL       time.Duration `default:"1h" help:"Lifetime (exp claim); 0 for none."`
}

func (t tokenCmd) Run() error {
	b, err := os.ReadFile(t.Key)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	tok, err := auth.MintToken(b, auth.TokenClaims{ComputeID: t.ComputeID, Admin: t.Admin, TTL: t.TTL}, time.Now())
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func main() {
	log := logx.Setup(os.Stderr, "compute-api")
	var c cli
	kctx := kong.Parse(&c, kong.Name("compute-api"), kong.Vars(paths.Vars()),
		kong.Description("Neon-compatible compute HTTP API."), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(log); err != nil {
		log.Error("compute-api "+kctx.Command()+" failed", "err", err)
		os.Exit(1)
	}
}

// checkPoweroffDropIn logs an error when compute-api is set to power the machine off but
// compute-tools-generator's drop-in (paths.PoweroffDropIn in generatorDir) is absent: the
// polkit rule lets compute-api start poweroff.target only while it exists, and the
// generator writes it at boot and at daemon-reload only, so the setting was changed
// without a daemon-reload (or the generator did not read it as poweroff).
func checkPoweroffDropIn(action control.EndAction, generatorDir string, log *slog.Logger) {
	if action != control.EndPowerOff {
		return
	}
	p := filepath.Join(generatorDir, paths.PoweroffDropIn)
	_, err := os.Stat(p)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		log.Error("COMPUTE_ON_TERMINATED=poweroff, but compute-tools-generator has not written its drop-in: polkit will refuse to power off at the end; run systemctl daemon-reload",
			"drop_in", p)
	default:
		log.Error("COMPUTE_ON_TERMINATED=poweroff: cannot check compute-tools-generator's drop-in", "drop_in", p, "err", err)
	}
}
