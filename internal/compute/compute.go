// Package compute holds the steps of compute-init: prepare (get the config, prepare
// PGDATA, write postgresql.conf), configure (apply the spec once Postgres is ready) and
// the postgres stop hook that records how Postgres ended. Each step records its progress
// in the state store; systemd orders the steps.
//
// In neon mode, a refused admin login goes through compute_ctl's fallback for old
// timelines (connectAdmin): zenith_admin creates the admin role. Differences: the role
// created is the connection string's user, not a literal cloud_admin, and a failed
// fallback is final rather than retried (docs/architecture.md, "Old timelines").
package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/localproxy"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/state"
)

// Settings are what the steps need to know about this host: paths, the admin connection,
// the control plane and the gateway (from the flags), as opposed to the compute's config.
type Settings struct {
	StateDir       string
	ConfigFile     string
	PGData         string
	PGBin          string
	Connstr        string
	PrivilegedRole string
	// ControlPlaneURI, when set, is where the config comes from (GET
	// {uri}/compute/api/v2/computes/{ComputeID}/spec with ControlPlaneToken).
	ControlPlaneURI   string
	ComputeID         string
	ControlPlaneToken string
	// RemoteExtBaseURL is the extension gateway (normalized); empty: no downloads.
	RemoteExtBaseURL string
	// BasebackupAttempts bounds the basebackup retries (0: compute_ctl's 11).
	BasebackupAttempts int
	// PageserverIdleTimeout fails a basebackup attempt or an LSN lease request when the
	// pageserver sends nothing for this long (0: pageserver.DefaultIdleTimeout).
	PageserverIdleTimeout time.Duration
	// SyncSafekeepersTimeout bounds one --sync-safekeepers run (0:
	// safekeeper.DefaultSyncTimeout).
	SyncSafekeepersTimeout time.Duration
	// ControlPlaneTimeout bounds one control-plane request, the body included (0:
	// controlplane.DefaultRequestTimeout).
	ControlPlaneTimeout time.Duration
	// OSUser runs initdb when the step itself runs as root (by hand).
	OSUser           string
	InternalHTTPPort int
	// PgbouncerIni is pgbouncer's ini file, PgbouncerConnstr its admin console and
	// PgbouncerPassword that connection's password (pgbouncer_settings).
	PgbouncerIni      string
	PgbouncerConnstr  string
	PgbouncerPassword string
	// LocalProxyConfig and LocalProxyPidFile are local_proxy's config and pid files,
	// LocalProxyUnit its systemd unit (local_proxy_config).
	LocalProxyConfig  string
	LocalProxyPidFile string
	LocalProxyUnit    string
	// ResizeSwapOnBind and DiskQuotaFS are compute_ctl's --resize-swap-on-bind and
	// --set-disk-quota-for-fs: with them, the spec's swap_size_bytes and
	// disk_quota_bytes are applied (Deps.VM) before Postgres starts.
	ResizeSwapOnBind bool
	DiskQuotaFS      string
	// GDB is the debugger the stop hook runs on core dumps in PGDATA (empty: paths.GDB).
	GDB string
	// Warmup warms a pooled VM up while it waits for POST /configure (no config at
	// start): a throwaway initdb and Postgres start (internal/warmup), aborted when the
	// config comes.
	Warmup bool
	// AuditEndpoint and AuditTLSEndpoint are compute_ctl's AUDIT_LOGGING_ENDPOINT and
	// AUDIT_LOGGING_TLS_ENDPOINT (host:port; TLS wins): where compute-rsyslog.service
	// ships the compliance audit.
	AuditEndpoint    string
	AuditTLSEndpoint string
	// Rsyslogd is the rsyslog binary compute-rsyslog.service runs (empty:
	// paths.Rsyslogd): without it, nothing is shipped.
	Rsyslogd string
	// RsyslogGTLS is a glob pattern of rsyslog's TLS driver, which TLS to the audit
	// receiver needs (empty: paths.RsyslogGTLSDriver).
	RsyslogGTLS string
	// RsyslogWorkDir is compute-rsyslog.service's work directory, where imfile and
	// imjournal keep their positions (empty: paths.RsyslogWorkDir).
	RsyslogWorkDir string
	// RsyslogCAFiles are the CA bundles looked for, the first that exists checking the
	// TLS audit receiver (empty: paths.RsyslogCAFiles).
	RsyslogCAFiles []string
}

// Waker delivers a hint that the state may have changed (a D-Bus status signal).
type Waker interface {
	Subscribe() (ch <-chan struct{}, cancel func())
}

// Notifier mirrors progress to systemd (sd_notify STATUS=).
type Notifier interface {
	Status(text string)
}

// UnitTimes reads the start and ready timestamps of a unit (systemd over D-Bus).
type UnitTimes interface {
	UnitTimestamps(ctx context.Context, name string) (execMainStart, activeEnter time.Time, err error)
}

// VMHelpers resizes swap and sets the disk quota (internal/neonvm).
type VMHelpers interface {
	ResizeSwap(ctx context.Context, bytes uint64) error
	SetDiskQuota(ctx context.Context, bytes uint64, mountpoint string) error
}

// Deps are the collaborators of the steps; any may be a no-op.
type Deps struct {
	Store    *state.Store
	Waker    Waker
	Notifier Notifier
	Units    UnitTimes
	// VM runs NeonVM's helpers (swap, disk quota); nil: those steps fail if configured.
	VM  VMHelpers
	Now func() time.Time
	// Log is the step's logger (nil: slog.Default()).
	Log *slog.Logger
	// LocalProxyUnits reloads local_proxy when it runs as a systemd unit (nil: only
	// its pid file is used).
	LocalProxyUnits localproxy.Units
	// LogUnits restarts and stops compute-rsyslog.service (nil: log shipping cannot
	// be set up).
	LogUnits LogUnits
	// actor is the step on whose behalf the status moves (set by each step's entry point).
	actor state.Actor
}

// as returns a copy of d that moves the status on behalf of actor a.
func (d *Deps) as(a state.Actor) *Deps {
	c := *d
	c.actor = a
	return &c
}

func (d *Deps) logger() *slog.Logger { return orDefault(d.Log) }

// orDefault is l, or slog.Default() for nil.
func orDefault(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.Default()
}

func (d *Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Deps) status(text string) {
	if d.Notifier != nil {
		d.Notifier.Status(text)
	}
}

func (d *Deps) subscribe() (<-chan struct{}, func()) {
	if d.Waker == nil {
		return nil, func() {}
	}
	return d.Waker.Subscribe()
}

// connInfo is what the admin connection string says about the local Postgres.
type connInfo struct {
	User      string
	Port      int
	SocketDir string
}

// parseConnstr reads the admin connection string with pg.Config, the parser pg.Connect
// uses, so that postgresql.conf's port and socket directory and the initdb user are where
// the maintenance connections go (a URL or a key=value list; libpq's defaults and PG*
// environment apply). A TCP host leaves the socket directory at its default.
func parseConnstr(s string) (connInfo, error) {
	cfg, err := pg.Config(s, "")
	if err != nil {
		// pg.Config says nothing about the text (it could hold a password).
		return connInfo{}, errors.New("connstr: not a valid postgres URL or key=value list")
	}
	// The admin role logs in only over the unix socket, by peer authentication through
	// pg_ident.conf's map (both storage modes: pgdata.WriteAuth); over TCP it would be
	// asked for a password it does not have, late and obscurely.
	if !strings.HasPrefix(cfg.Host, "/") {
		return connInfo{}, fmt.Errorf("connstr (COMPUTE_CONNSTR): the admin role %q logs in only over the unix socket: add ?host=%s to the connection string", cfg.User, paths.DefaultSocketDir)
	}
	return connInfo{User: cfg.User, Port: int(cfg.Port), SocketDir: cfg.Host}, nil
}

// fail records err as the compute's error and moves the status to failed (state.Fail's
// guard: from any status the step may fail from; a compute already failed, terminated or
// being terminated is left alone), then returns err.
func (d *Deps) fail(err error) error {
	msg := err.Error()
	_, failed, terr := d.Store.Fail(d.actor, msg)
	if terr != nil {
		return fmt.Errorf("%w (and recording the failure: %v)", err, terr)
	}
	if failed {
		logx.Milestone(d.logger(), logx.MsgFailed, "compute failed", "err", msg)
	}
	d.status("failed: " + msg)
	return err
}

func ms(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	return uint64(d.Milliseconds())
}
