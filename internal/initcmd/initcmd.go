// Package initcmd runs compute-init's commands. The command line (kong) stays in
// cmd/compute-init; this package turns its host settings into a compute.Settings, builds
// the collaborators of a step (the state store, a best-effort D-Bus connection that
// announces status changes, a systemd connection made in the background) and runs the
// step of internal/compute. It also implements `status` (with `--wait`) and the apply by
// hand of `configure` without --managed.
package initcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/computetools/compute-tools/internal/bus"
	"github.com/computetools/compute-tools/internal/compute"
	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/sysd"
)

// Host is the host settings every command shares, as given on the command line.
type Host struct {
	StateDir       string
	ConfigFile     string
	PGData         string
	PGBin          string
	Connstr        string
	ComputeID      string
	PrivilegedRole string
	// InternalHTTPPort is compute-api's internal port (neon.extension_server_port).
	InternalHTTPPort int
	// RemoteExtBaseURL is the extension gateway as given (checked and normalised by
	// Config).
	RemoteExtBaseURL string
	// RemoteExtAllowHTTP lets RemoteExtBaseURL be plain http://.
	RemoteExtAllowHTTP bool
	ControlPlaneURI    string
	ControlPlaneToken  string
	// Bounds on waits for Neon's storage and control plane (0: the defaults; see
	// compute.Settings).
	BasebackupAttempts     int
	PageserverIdleTimeout  time.Duration
	SyncSafekeepersTimeout time.Duration
	ControlPlaneTimeout    time.Duration
	// pgbouncer and local_proxy (see compute.Settings).
	PgbouncerIni, PgbouncerConnstr, PgbouncerPassword string
	LocalProxyConfig, LocalProxyPidFile               string
	// ResizeSwapOnBind and DiskQuotaFS are --resize-swap-on-bind and
	// --set-disk-quota-for-fs (see compute.Settings).
	ResizeSwapOnBind bool
	DiskQuotaFS      string
	// Warmup is --warmup (see compute.Settings).
	Warmup bool
	// AuditEndpoint and AuditTLSEndpoint are where the compliance audit is shipped
	// (see compute.Settings).
	AuditEndpoint, AuditTLSEndpoint string
	// Log is the binary's logger (nil: slog.Default()).
	Log *slog.Logger
}

var privRoleRe = regexp.MustCompile(`^[a-z_]+$`)

// Config checks the settings and returns the steps' compute.Settings.
func (h Host) Config() (compute.Settings, error) {
	if !privRoleRe.MatchString(h.PrivilegedRole) {
		return compute.Settings{}, fmt.Errorf("--privileged-role-name %q must match ^[a-z_]+$", h.PrivilegedRole)
	}
	extURL := ""
	if h.RemoteExtBaseURL != "" {
		u, err := controlplane.NormalizeRemoteExtURL(h.RemoteExtBaseURL, h.RemoteExtAllowHTTP)
		if err != nil {
			return compute.Settings{}, fmt.Errorf("--remote-ext-base-url: %w", err)
		}
		extURL = u
	}
	return compute.Settings{
		RemoteExtBaseURL: extURL,
		StateDir:         h.StateDir, ConfigFile: h.ConfigFile, PGData: h.PGData, PGBin: h.PGBin,
		Connstr: h.Connstr, PrivilegedRole: h.PrivilegedRole, OSUser: paths.DefaultPGUser,
		InternalHTTPPort: h.InternalHTTPPort,
		ControlPlaneURI:  h.ControlPlaneURI, ComputeID: h.ComputeID,
		ControlPlaneToken:  h.ControlPlaneToken,
		BasebackupAttempts: h.BasebackupAttempts, PageserverIdleTimeout: h.PageserverIdleTimeout,
		SyncSafekeepersTimeout: h.SyncSafekeepersTimeout, ControlPlaneTimeout: h.ControlPlaneTimeout,
		PgbouncerIni: h.PgbouncerIni, PgbouncerConnstr: h.PgbouncerConnstr, PgbouncerPassword: h.PgbouncerPassword,
		LocalProxyConfig: h.LocalProxyConfig, LocalProxyPidFile: h.LocalProxyPidFile, LocalProxyUnit: paths.UnitLocalProxy,
		ResizeSwapOnBind: h.ResizeSwapOnBind, DiskQuotaFS: h.DiskQuotaFS,
		Warmup:        h.Warmup,
		AuditEndpoint: h.AuditEndpoint, AuditTLSEndpoint: h.AuditTLSEndpoint,
	}, nil
}

// Prepare runs the prepare step (compute-init.service).
func Prepare(ctx context.Context, h Host) error {
	return production.step(ctx, h, false, func(cfg compute.Settings, d *compute.Deps) error {
		d.VM = vmHelpers(os.Geteuid() == 0, production.dialSystemd, d.Log)
		d.LogUnits = onDemandUnits{dial: production.dialSystemd}
		return compute.Prepare(ctx, cfg, d)
	})
}

// ConfigureManaged runs the configure step (compute-configure.service).
func ConfigureManaged(ctx context.Context, h Host) error {
	return production.step(ctx, h, true, func(cfg compute.Settings, d *compute.Deps) error {
		return compute.Configure(ctx, cfg, d)
	})
}

// LeaseLSN keeps a static compute's LSN leased (compute-lsn-lease.service).
func LeaseLSN(ctx context.Context, h Host) error {
	return production.step(ctx, h, false, func(cfg compute.Settings, d *compute.Deps) error {
		return compute.LeaseLSN(ctx, cfg, d)
	})
}

// PostgresStopped records how Postgres ended (ExecStopPost= of compute-postgres.service).
func PostgresStopped(ctx context.Context, h Host, info compute.StopInfo) error {
	return production.step(ctx, h, false, func(cfg compute.Settings, d *compute.Deps) error {
		return compute.PostgresStopped(ctx, cfg, info, d)
	})
}

// busConn is the part of a bus connection a step uses (*bus.Conn).
type busConn interface {
	compute.Waker
	EmitStatusChanged(status string, seq uint64) error
	Close()
}

// env is how a command reaches the outside world; tests replace its parts.
type env struct {
	connectBus  func(ctx context.Context) (busConn, error)
	dialSystemd func(ctx context.Context) (unitManager, error)
	notifier    compute.Notifier
	log         *slog.Logger
}

var production = env{
	connectBus: func(ctx context.Context) (busConn, error) { return bus.Connect(ctx) },
	dialSystemd: func(ctx context.Context) (unitManager, error) {
		m, err := sysd.NewManager(ctx)
		if err != nil {
			return nil, err
		}
		return m, nil
	},
	notifier: notifier{},
}

func (e env) logger() *slog.Logger {
	if e.log != nil {
		return e.log
	}
	return slog.Default()
}

// notifier mirrors progress to systemd with sd_notify STATUS=.
type notifier struct{}

func (notifier) Status(text string) { _ = sysd.Status(text) }

// step runs fn with the checked host config and the collaborators of a step.
func (e env) step(ctx context.Context, h Host, withUnits bool, fn func(compute.Settings, *compute.Deps) error) error {
	cfg, err := h.Config()
	if err != nil {
		return err
	}
	if h.Log != nil {
		e.log = h.Log
	}
	d, done, err := e.deps(ctx, h.StateDir, withUnits)
	if err != nil {
		return err
	}
	defer done()
	return fn(cfg, d)
}

// deps builds the store and its D-Bus and systemd collaborators. D-Bus is best effort:
// without it, waiters fall back to re-reading the state file every few seconds.
// withUnits adds the systemd manager connection, made in the background so that it costs
// the step no time. done closes what deps opened.
func (e env) deps(ctx context.Context, stateDir string, withUnits bool) (d *compute.Deps, done func(), err error) {
	store, err := state.Open(stateDir)
	if err != nil {
		return nil, nil, err
	}
	log := e.logger()
	store.Log = log
	d = &compute.Deps{Store: store, Notifier: e.notifier, Log: log}
	var closers []func()
	if conn, err := e.connectBus(ctx); err != nil {
		log.Warn("no D-Bus: status changes are not announced", "err", err)
	} else {
		if bc, ok := conn.(*bus.Conn); ok {
			bc.Log = log
		}
		closers = append(closers, conn.Close)
		d.Waker = conn
		store.Announce(conn.EmitStatusChanged)
	}
	if withUnits {
		u := connectUnits(ctx, e.dialSystemd)
		closers = append(closers, u.Close)
		d.Units = u
		d.LocalProxyUnits = u
		d.LogUnits = u
	}
	return d, func() {
		for _, f := range closers {
			f()
		}
	}, nil
}
