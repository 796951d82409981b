// Command compute-init prepares and configures the compute: `prepare` (unit
// compute-init.service), `configure` (compute-configure.service), `postgres-stopped`
// (ExecStopPost= of compute-postgres.service) and `status` for operators. The commands
// run in internal/initcmd; this file is the command line.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/initcmd"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
)

// common flags mirror compute_ctl's names; each can come from /etc/default/compute-tools.
type common struct {
	StateDir           string `name:"state-dir" env:"COMPUTE_STATE_DIR" default:"${COMPUTE_STATE_DIR}" help:"Directory of the shared state record."`
	Config             string `short:"c" name:"config" env:"COMPUTE_CONFIG" default:"${COMPUTE_CONFIG}" help:"ComputeConfig JSON file; without a spec in it, wait for POST /configure."`
	PGData             string `short:"D" name:"pgdata" env:"PGDATA" default:"${PGDATA}" help:"Postgres data directory."`
	PGBin              string `short:"b" name:"pgbin" env:"PGBIN" default:"${PGBIN}" help:"Path of the postgres binary."`
	Connstr            string `short:"C" name:"connstr" env:"COMPUTE_CONNSTR" default:"${COMPUTE_CONNSTR}" help:"How to connect as the admin role."`
	ComputeID          string `short:"i" name:"compute-id" env:"COMPUTE_ID" default:"${COMPUTE_ID}" help:"Compute ID."`
	PrivilegedRoleName string `name:"privileged-role-name" env:"PRIVILEGED_ROLE_NAME" default:"${PRIVILEGED_ROLE_NAME}" help:"Privileged role given to spec roles (^[a-z_]+$)."`
	InternalHTTPPort   int    `name:"internal-http-port" env:"INTERNAL_HTTP_PORT" default:"${INTERNAL_HTTP_PORT}" help:"Internal API port (written as neon.extension_server_port)."`
	RemoteExtBaseURL   string `short:"r" name:"remote-ext-base-url" env:"REMOTE_EXT_BASE_URL" help:"Base URL of the extension gateway for remote extensions (https://; http:// only with --remote-ext-allow-http)."`
	RemoteExtAllowHTTP bool   `name:"remote-ext-allow-http" env:"REMOTE_EXT_ALLOW_HTTP" help:"Allow a plain http:// extension gateway (the archives carry no checksum: only for a network you trust)."`
	ControlPlaneURI    string `short:"p" name:"control-plane-uri" env:"CONTROL_PLANE_URI" help:"Get the config from the control plane (GET {uri}/compute/api/v2/computes/{id}/spec, bearer token from the systemd credential compute-control-plane-token, or NEON_CONTROL_PLANE_TOKEN) instead of the config file."`

	BasebackupAttempts     int           `name:"basebackup-attempts" env:"COMPUTE_BASEBACKUP_ATTEMPTS" default:"${COMPUTE_BASEBACKUP_ATTEMPTS}" help:"Attempts of a basebackup (compute_ctl: 11, 500 ms apart growing x1.5)."`
	PageserverIdleTimeout  time.Duration `name:"pageserver-idle-timeout" env:"COMPUTE_PAGESERVER_IDLE_TIMEOUT" default:"${COMPUTE_PAGESERVER_IDLE_TIMEOUT}" help:"Give up a basebackup attempt or an LSN lease request when the pageserver sends nothing for this long (a stall; a slow transfer that moves goes on)."`
	SyncSafekeepersTimeout time.Duration `name:"sync-safekeepers-timeout" env:"COMPUTE_SYNC_SAFEKEEPERS_TIMEOUT" default:"${COMPUTE_SYNC_SAFEKEEPERS_TIMEOUT}" help:"Kill postgres --sync-safekeepers when it has not finished within this (at start; at /terminate at most 45s, within the Postgres unit's stop timeout)."`
	ResizeSwapOnBind       bool          `name:"resize-swap-on-bind" env:"COMPUTE_RESIZE_SWAP_ON_BIND" default:"${COMPUTE_RESIZE_SWAP_ON_BIND}" help:"Resize swap to the spec's swap_size_bytes before Postgres starts (/neonvm/bin/resize-swap --once, through compute-resize-swap@<bytes>.service unless root); skipped where the helper is not installed."`
	SetDiskQuotaForFS      string        `name:"set-disk-quota-for-fs" env:"COMPUTE_SET_DISK_QUOTA_FOR_FS" placeholder:"MOUNTPOINT" help:"Set this filesystem's quota to the spec's disk_quota_bytes before Postgres starts (/neonvm/bin/set-disk-quota, through compute-disk-quota@<kib>.service unless root); skipped where the helper is not installed."`
	Warmup                 bool          `name:"warmup" env:"COMPUTE_WARMUP" default:"${COMPUTE_WARMUP}" negatable:"" help:"Started without a config (a pooled VM), warm the VM up while waiting for POST /configure: a throwaway initdb and Postgres start beside PGDATA, aborted when the config comes (compute_ctl's prewarm)."`
	ControlPlaneTimeout    time.Duration `name:"control-plane-timeout" env:"COMPUTE_CONTROL_PLANE_TIMEOUT" default:"${COMPUTE_CONTROL_PLANE_TIMEOUT}" help:"Bound of one control-plane request (3 attempts, 100 ms apart, on 502, 503, transport errors and bodies that do not decode)."`

	PgbouncerIni      string `name:"pgbouncer-ini" env:"PGBOUNCER_INI" default:"${PGBOUNCER_INI}" help:"pgbouncer's ini file: the spec's pgbouncer_settings go into its [pgbouncer] section."`
	PgbouncerConnstr  string `name:"pgbouncer-connstr" env:"PGBOUNCER_CONNSTR" default:"${PGBOUNCER_CONNSTR}" help:"pgbouncer's admin console, where RELOAD is sent."`
	PgbouncerPassword string `name:"pgbouncer-password" env:"PGBOUNCER_PASSWORD" hidden:"" help:"Password of the pgbouncer admin connection (environment only)."`
	LocalProxyConfig  string `name:"local-proxy-config" env:"LOCAL_PROXY_CONFIG" default:"${LOCAL_PROXY_CONFIG}" help:"local_proxy's config file (the spec's local_proxy_config)."`
	AuditEndpoint     string `name:"audit-logging-endpoint" env:"AUDIT_LOGGING_ENDPOINT" placeholder:"HOST:PORT" help:"Receiver of the compliance audit (audit_log_level Hipaa, Extended, Full), plain TCP syslog."`
	AuditTLSEndpoint  string `name:"audit-logging-tls-endpoint" env:"AUDIT_LOGGING_TLS_ENDPOINT" placeholder:"HOST:PORT" help:"Receiver of the compliance audit over TLS (wins over --audit-logging-endpoint)."`
	LocalProxyPidFile string `name:"local-proxy-pid-file" env:"LOCAL_PROXY_PID_FILE" default:"${LOCAL_PROXY_PID_FILE}" help:"local_proxy's pid file: SIGHUP goes to its pid when local_proxy is no active unit."`

	// log is the binary's logger (set in main; kong ignores unexported fields).
	log *slog.Logger
}

func (c *common) host() initcmd.Host {
	return initcmd.Host{StateDir: c.StateDir, ConfigFile: c.Config, PGData: c.PGData, PGBin: c.PGBin,
		Connstr: c.Connstr, ComputeID: c.ComputeID, PrivilegedRole: c.PrivilegedRoleName,
		InternalHTTPPort: c.InternalHTTPPort, RemoteExtBaseURL: c.RemoteExtBaseURL, RemoteExtAllowHTTP: c.RemoteExtAllowHTTP,
		ControlPlaneURI: c.ControlPlaneURI, Log: c.log,
		BasebackupAttempts: c.BasebackupAttempts, PageserverIdleTimeout: c.PageserverIdleTimeout,
		SyncSafekeepersTimeout: c.SyncSafekeepersTimeout, ControlPlaneTimeout: c.ControlPlaneTimeout,
		PgbouncerIni: c.PgbouncerIni, PgbouncerConnstr: c.PgbouncerConnstr, PgbouncerPassword: c.PgbouncerPassword,
		LocalProxyConfig: c.LocalProxyConfig, LocalProxyPidFile: c.LocalProxyPidFile,
		ResizeSwapOnBind: c.ResizeSwapOnBind, DiskQuotaFS: c.SetDiskQuotaForFS, Warmup: c.Warmup,
		AuditEndpoint: c.AuditEndpoint, AuditTLSEndpoint: c.AuditTLSEndpoint}
}

type cli struct {
	common
	Prepare         prepareCmd   `cmd:"" help:"Get the config and prepare PGDATA (compute-init.service)."`
	Configure       configureCmd `cmd:"" help:"Apply the spec once Postgres is ready (compute-configure.service)."`
	PostgresStopped stoppedCmd   `cmd:"" name:"postgres-stopped" help:"Record how Postgres ended (ExecStopPost= of compute-postgres.service)."`
	Status          statusCmd    `cmd:"" help:"Print the compute status without a token."`
	LSNLease        leaseCmd     `cmd:"" name:"lsn-lease" help:"Keep a Static compute's LSN leased on the pageservers (compute-lsn-lease.service)."`
}

type prepareCmd struct{}

func (prepareCmd) Run(ctx context.Context, c *common) error {
	h := c.host()
	if h.ControlPlaneURI != "" {
		tok, err := controlplane.LoadToken(os.Getenv("CREDENTIALS_DIRECTORY"), os.Getenv(controlplane.TokenEnv), c.log)
		if err != nil {
			return err
		}
		h.ControlPlaneToken = tok
	}
	return initcmd.Prepare(ctx, h)
}

type configureCmd struct {
	Managed bool `help:"Run as compute-configure.service: apply the spec prepare left (or the one POST /configure sent) and record the status. Without it, apply the -c config file to the Postgres at -C by hand, without touching the compute's state."`
	DryRun  bool `name:"dry-run" help:"By hand: print the plan, change nothing."`
}

func (cc configureCmd) Run(ctx context.Context, c *common) error {
	switch {
	case !cc.Managed:
		return initcmd.ConfigureByHand(ctx, c.host(), cc.DryRun, os.Stdout)
	case cc.DryRun:
		return fmt.Errorf("--dry-run goes with a run by hand, not --managed")
	}
	return initcmd.ConfigureManaged(ctx, c.host())
}

type leaseCmd struct{}

func (leaseCmd) Run(ctx context.Context, c *common) error { return initcmd.LeaseLSN(ctx, c.host()) }

type stoppedCmd struct{}

func (stoppedCmd) Run(ctx context.Context, c *common) error {
	return initcmd.PostgresStopped(ctx, c.host(), compute.StopInfo{ServiceResult: os.Getenv("SERVICE_RESULT"),
		ExitCode: os.Getenv("EXIT_CODE"), ExitStatus: os.Getenv("EXIT_STATUS"), InvocationID: os.Getenv("INVOCATION_ID")})
}

type statusCmd struct {
	Wait    string        `help:"Wait until the status is this one (or failed/terminated), then print it." placeholder:"STATUS"`
	Timeout time.Duration `default:"2m" help:"How long --wait waits."`
	Full    bool          `help:"Print the whole state record (metrics included)."`
}

func (s statusCmd) Run(ctx context.Context, c *common) error {
	return initcmd.Status(ctx, c.StateDir, initcmd.StatusOptions{Wait: s.Wait, Timeout: s.Timeout, Full: s.Full}, os.Stdout)
}

func main() {
	log := logx.Setup(os.Stderr, "compute-init")
	c := cli{common: common{log: log}}
	kctx := kong.Parse(&c, kong.Name("compute-init"), kong.Vars(paths.Vars()),
		kong.Description("Prepares and configures a serverless Postgres compute (Neon compute_ctl compatible)."),
		kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&c.common); err != nil {
		log.Error("compute-init "+kctx.Command()+" failed", "err", err)
		os.Exit(1)
	}
}
