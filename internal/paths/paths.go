// Package paths is the one source of the toolkit's defaults and of the names of the files,
// directories, units and helper binaries it uses. The flags of both binaries take their
// defaults from Vars; packaging/default/compute-tools, the unit files and the README repeat
// some of them for people, and a test checks that they agree with this package.
package paths

import (
	"path/filepath"
	"strconv"
)

// ConnstrWithPort is DefaultConnstr with another port: the admin connection when the
// spec moves Postgres to another port and the connection string was left at its default.
func ConnstrWithPort(port int) string {
	return "postgresql://" + DefaultAdminRole + "@localhost:" + strconv.Itoa(port) + "/postgres?host=" + DefaultSocketDir
}

// Defaults of an installed package.
const (
	DefaultStateDir   = "/run/compute"
	DefaultConfigFile = "/etc/compute/config.json"
	DefaultPGData     = "/var/db/postgres/compute"
	DefaultPGBin      = "/usr/lib/postgresql/15/bin/postgres"
	DefaultSocketDir  = "/run/compute-postgres"
	DefaultPGPort     = "55432"
	DefaultAdminRole  = "cloud_admin"
	// LegacyAdminRole is the superuser of Neon timelines created before the admin role
	// was renamed cloud_admin; their basebackups carry it and no cloud_admin. In neon mode
	// it may log in like the admin role, so that the first start can create the admin
	// role through it (internal/compute, connectAdmin).
	LegacyAdminRole  = "zenith_admin"
	DefaultConnstr   = "postgresql://" + DefaultAdminRole + "@localhost:" + DefaultPGPort + "/postgres?host=" + DefaultSocketDir
	DefaultPGUser    = "postgres"
	DefaultPrivRole  = "neon_superuser"
	DefaultComputeID = "compute-local"

	DefaultExternalHTTPPort = 3080
	DefaultInternalHTTPPort = 3081
	DefaultInternalHTTPAddr = "127.0.0.1"
	DefaultTLSPollInterval  = "60s"

	// The HTTP servers of compute-api (both ports). A request's headers must arrive
	// within the read-header timeout and the whole request within the read timeout; an
	// answer must be written within the write timeout, except on the routes that block
	// or stream (POST /configure, POST /terminate, the internal /extension_server),
	// which lift the deadlines once their request is read; a kept-alive connection
	// is closed after the idle timeout.
	DefaultAPIReadHeaderTimeout = "10s"
	DefaultAPIReadTimeout       = "60s"
	DefaultAPIWriteTimeout      = "60s"
	DefaultAPIIdleTimeout       = "120s"
	// DefaultAPIMaxConnections bounds the external port's open connections; past it the
	// oldest connection that is not in a handler (idle, or still sending its request) is
	// closed.
	DefaultAPIMaxConnections = 128
	// DefaultAPIMaxBodyBytes is the request body limit, the 2 MB of the reference (axum's
	// default; a larger body is answered 413).
	DefaultAPIMaxBodyBytes = 2 << 20
	// DefaultAPIConfigureParses bounds the POST /configure bodies read and parsed at once.
	DefaultAPIConfigureParses = 2
	// DefaultMonitorInterval is compute-monitor's round interval (the reference's 500 ms).
	DefaultMonitorInterval = "500ms"
	// DefaultTrimAfter is how long compute-monitor (a lifecycle's rounds, a wait for
	// running) and the vm-monitor (its start, an agent connection) run before they give
	// back the binary's pages that only start-up used (internal/memtrim); 0 never.
	DefaultTrimAfter = "30s"
	// DefaultExtStatsInterval is the base interval of compute-monitor's installed
	// extensions collection when the spec's suspend_timeout_seconds gives none (the
	// reference's --installed-extensions-collection-interval, 3600 s); collections are
	// twice it apart.
	DefaultExtStatsInterval = "1h"
	// DefaultOnTerminated is compute-api's action once the compute is terminated (or its
	// start failed): stop compute.target (see internal/control's EndAction).
	DefaultOnTerminated = "stop"

	// Bounds on the waits for Neon's storage and control plane (neon mode); the packages
	// that wait have the same defaults as durations (internal/compute's test holds them
	// equal).
	DefaultBasebackupAttempts     = "11"
	DefaultPageserverIdleTimeout  = "2m"
	DefaultSyncSafekeepersTimeout = "5m"
	DefaultControlPlaneTimeout    = "30s"

	// DefaultVMMonitorAddr is the vm-monitor's TCP listener (compute_ctl's
	// --vm-monitor-addr; what the stock autoscaler agent dials through NeonVM's port
	// forwarding). Empty: no TCP listener.
	DefaultVMMonitorAddr = "0.0.0.0:10301"
	// DefaultVMMonitorVsockPort is the vm-monitor's vsock port (0: no vsock listener).
	DefaultVMMonitorVsockPort = 10301
	// DefaultVMMonitorCgroupUnit is the unit whose cgroup the vm-monitor watches and
	// whose MemoryHigh= it sets.
	DefaultVMMonitorCgroupUnit = UnitPostgres
	// pgbouncer beside Postgres (pgbouncer_settings; internal/pgbouncer): its ini file
	// and admin console (compute_ctl's VM pair; Debian's package keeps the file at
	// /etc/pgbouncer/pgbouncer.ini and listens on localhost:6432), and the pid file by
	// which /terminate ends a pgbouncer that is no systemd unit.
	DefaultPgbouncerIni     = "/etc/pgbouncer.ini"
	DefaultPgbouncerConnstr = "host=/tmp port=6432 dbname=pgbouncer user=pgbouncer"
	DefaultPgbouncerPidFile = "/tmp/pgbouncer.pid"
	// Neon's local_proxy (local_proxy_config; internal/localproxy): its config and pid
	// files, as compute_ctl.
	DefaultLocalProxyConfig  = "/etc/local_proxy/config.json"
	DefaultLocalProxyPidFile = "/etc/local_proxy/pid"

	// DefaultAutoscaling is AUTOSCALING when /etc/default/compute-tools does not say
	// true: the vm-monitor is off.
	DefaultAutoscaling = "false"
)

// adminOSUsers are the OS users that may act as the admin role over the unix socket
// (peer authentication through pg_ident.conf's map, both storage modes): postgres runs
// compute-init, compute-configure, compute-monitor and the stop hook; compute-api (its
// Postgres routes: /check_writability, /insights, /dbs_and_roles, /database_schema's
// pg_dump, /extensions, /grants, /promote) and the vm-monitor (the file cache's ALTER
// SYSTEM and pg_reload_conf) run as their own users; root runs both of those on an image
// without polkit, and an operator's psql. The one list: a unit that moves to a user of
// its own adds that user here.
var adminOSUsers = []string{DefaultPGUser, APIUser, VMMonitorUser, "root"}

// APIUser is the system user compute-api runs as (packaging/sysusers; root on an image
// without polkit, see compute-tools-generator).
const APIUser = "compute-api"

// VMMonitorUser is the system user the vm-monitor (compute-vm-monitor.service) runs as
// (packaging/sysusers; root on an image without polkit, see compute-tools-generator).
const VMMonitorUser = "compute-vm-monitor"

// DefaultInternalHTTPUsers are the local OS users whose connections the internal port
// serves on its routes that do not act as the admin role, /extension_server (compute-api
// looks up the owner of the caller's socket; others get 403): root, postgres (Postgres's
// /extension_server requests) and compute-api. "*" lets every local user in, as the
// reference does. Callers on other hosts (INTERNAL_HTTP_ADDR not loopback) are served as
// before: no local user to check. EnvInternalHTTPUsers sets it.
const DefaultInternalHTTPUsers = "root," + DefaultPGUser + "," + APIUser

// EnvInternalHTTPUsers is compute-api's --internal-http-users.
const EnvInternalHTTPUsers = "INTERNAL_HTTP_USERS"

// DefaultInternalHTTPAdminUsers are the local OS users whose connections the internal
// port serves on POST /extensions and /grants, which act as the admin role: root and
// compute-api. Not postgres: every Postgres backend runs as postgres, so SQL that can make
// HTTP requests (pgsql-http, pg_net) would reach them. local_proxy, which calls them,
// needs its user added (Neon's VM image runs it as postgres: adding postgres reopens that
// path). EnvInternalHTTPAdminUsers sets it.
const DefaultInternalHTTPAdminUsers = "root," + APIUser

// EnvInternalHTTPAdminUsers is compute-api's --internal-http-admin-users.
const EnvInternalHTTPAdminUsers = "INTERNAL_HTTP_ADMIN_USERS"

// AdminOSUsers returns a copy of the OS users mapped to the admin role in pg_ident.conf.
func AdminOSUsers() []string { return append([]string(nil), adminOSUsers...) }

// EnvironmentFile is the settings file every unit reads (EnvironmentFile=) and the
// systemd generator parses for AUTOSCALING and COMPUTE_ON_TERMINATED.
const EnvironmentFile = "/etc/default/compute-tools"

// PoweroffDropIn is the drop-in compute-tools-generator writes into systemd's generator
// directory (GeneratorDir) when COMPUTE_ON_TERMINATED is poweroff: the polkit rule lets
// compute-api start poweroff.target only while it exists.
const (
	GeneratorDir   = "/run/systemd/generator"
	PoweroffDropIn = "compute-api.service.d/50-poweroff.conf"
)

// The .rpm's counterparts (RHEL family): the environment file in /etc/sysconfig, and
// PGDG's PostgreSQL 15 (package postgresql15-server) in /usr/pgsql-15. The .rpm's units,
// generator and environment file name them (scripts/lib.sh, rpm_files); the binaries are
// the same in both packages.
const (
	RPMEnvironmentFile = "/etc/sysconfig/compute-tools"
	RPMPGBin           = "/usr/pgsql-15/bin/postgres"
)

// EnvironmentFiles names the environment file of either package, for messages.
const EnvironmentFiles = EnvironmentFile + " (" + RPMEnvironmentFile + " from the .rpm)"

// Unit names.
const (
	UnitInit      = "compute-init.service"
	UnitPostgres  = "compute-postgres.service"
	UnitConfigure = "compute-configure.service"
	UnitMonitor   = "compute-monitor.service"
	// UnitVMMonitor runs `compute-monitor vm-monitor`; compute.target wants it only when
	// AUTOSCALING=true (packaging/systemd/compute-tools-generator).
	UnitVMMonitor = "compute-vm-monitor.service"
	UnitTarget    = "compute.target"
	// The companions' units, when they run as units: Debian's pgbouncer package and
	// local_proxy. /terminate stops them through systemd (compute-api's polkit rule);
	// compute-configure reloads local_proxy's.
	UnitPgbouncer  = "pgbouncer.service"
	UnitLocalProxy = "local_proxy.service"
)

// Environment variables that carry a default, as the flags and
// packaging/default/compute-tools spell them.
const (
	EnvStateDir         = "COMPUTE_STATE_DIR"
	EnvConfigFile       = "COMPUTE_CONFIG"
	EnvPGData           = "PGDATA"
	EnvPGBin            = "PGBIN"
	EnvConnstr          = "COMPUTE_CONNSTR"
	EnvComputeID        = "COMPUTE_ID"
	EnvPrivRole         = "PRIVILEGED_ROLE_NAME"
	EnvExternalHTTPPort = "EXTERNAL_HTTP_PORT"
	EnvInternalHTTPPort = "INTERNAL_HTTP_PORT"
	EnvInternalHTTPAddr = "INTERNAL_HTTP_ADDR"
	EnvTLSPollInterval  = "COMPUTE_TLS_POLL_INTERVAL"
	EnvMonitorInterval  = "COMPUTE_MONITOR_INTERVAL"
	EnvExtStatsInterval = "COMPUTE_INSTALLED_EXTENSIONS_INTERVAL"
	EnvTrimAfter        = "COMPUTE_TRIM_AFTER"

	EnvBasebackupAttempts     = "COMPUTE_BASEBACKUP_ATTEMPTS"
	EnvPageserverIdleTimeout  = "COMPUTE_PAGESERVER_IDLE_TIMEOUT"
	EnvSyncSafekeepersTimeout = "COMPUTE_SYNC_SAFEKEEPERS_TIMEOUT"
	EnvControlPlaneTimeout    = "COMPUTE_CONTROL_PLANE_TIMEOUT"
	EnvOnTerminated           = "COMPUTE_ON_TERMINATED"

	EnvAPIReadHeaderTimeout = "COMPUTE_API_READ_HEADER_TIMEOUT"
	EnvAPIReadTimeout       = "COMPUTE_API_READ_TIMEOUT"
	EnvAPIWriteTimeout      = "COMPUTE_API_WRITE_TIMEOUT"
	EnvAPIIdleTimeout       = "COMPUTE_API_IDLE_TIMEOUT"
	EnvAPIMaxConnections    = "COMPUTE_API_MAX_CONNECTIONS"
	EnvAPIMaxBodyBytes      = "COMPUTE_API_MAX_BODY_BYTES"
	EnvAPIConfigureParses   = "COMPUTE_API_CONFIGURE_PARSES"

	EnvVMMonitorAddr       = "COMPUTE_VM_MONITOR_ADDR"
	EnvVMMonitorVsockPort  = "COMPUTE_VM_MONITOR_VSOCK_PORT"
	EnvVMMonitorCgroupUnit = "COMPUTE_VM_MONITOR_CGROUP_UNIT"
	// EnvAutoscaling turns the vm-monitor on ("true", quoted or not): the systemd
	// generator reads it from the EnvironmentFile, the unit's ExecCondition= and
	// `compute-monitor vm-monitor` (--autoscaling) from the unit's environment.
	EnvAutoscaling = "AUTOSCALING"

	EnvPgbouncerIni      = "PGBOUNCER_INI"
	EnvPgbouncerConnstr  = "PGBOUNCER_CONNSTR"
	EnvPgbouncerPidFile  = "PGBOUNCER_PID_FILE"
	EnvLocalProxyConfig  = "LOCAL_PROXY_CONFIG"
	EnvLocalProxyPidFile = "LOCAL_PROXY_PID_FILE"
	// EnvResizeSwapOnBind and EnvDiskQuotaFS are compute-init's --resize-swap-on-bind and
	// --set-disk-quota-for-fs (off by default; the second has no default value). compute-disk-quota@.service reads
	// EnvDiskQuotaFS from the EnvironmentFile itself: its caller names only the size.
	EnvResizeSwapOnBind = "COMPUTE_RESIZE_SWAP_ON_BIND"
	EnvDiskQuotaFS      = "COMPUTE_SET_DISK_QUOTA_FOR_FS"
	// EnvWarmup is compute-init's --warmup: a pooled VM's warm-up while it waits for
	// POST /configure (on by default, as compute_ctl).
	EnvWarmup = "COMPUTE_WARMUP"
)

// NeonVM's guest helpers, which compute_ctl runs through sudo (internal/neonvm): as
// root, compute-init runs them itself; otherwise it starts the templated units below,
// which run them as root with the size as the instance name.
const (
	ResizeSwapBin   = "/neonvm/bin/resize-swap"
	SetDiskQuotaBin = "/neonvm/bin/set-disk-quota"
)

// ResizeSwapUnit is the oneshot unit that runs `resize-swap --once <bytes>`.
func ResizeSwapUnit(bytes uint64) string {
	return "compute-resize-swap@" + strconv.FormatUint(bytes, 10) + ".service"
}

// DiskQuotaUnit is the oneshot unit that runs `set-disk-quota <kib> <mountpoint>`, the
// mountpoint being $COMPUTE_SET_DISK_QUOTA_FOR_FS of the EnvironmentFile.
func DiskQuotaUnit(kib uint64) string {
	return "compute-disk-quota@" + strconv.FormatUint(kib, 10) + ".service"
}

// Log shipping (compute_ctl's rsyslog; internal/rsyslog, internal/compute):
// compute-rsyslog.service runs Rsyslogd as postgres with the configuration compute-init
// and compute-configure render into the state directory (RsyslogConfFile); its work
// directory (the unit's StateDirectory=) keeps the positions it reached in the audit
// files and the journal.
const (
	UnitRsyslog    = "compute-rsyslog.service"
	Rsyslogd       = "/usr/sbin/rsyslogd"
	RsyslogWorkDir = "/var/lib/compute-rsyslog"
)

// RsyslogCAFiles are the system CA bundles that may check the TLS audit receiver, the
// first that exists being used: Debian's (compute_ctl's) and the RHEL family's (package
// ca-certificates on both).
var RsyslogCAFiles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}

// RsyslogGTLSDriver are where rsyslog's TLS driver may be (Debian's multiarch directory
// and the RHEL family's; Debian package rsyslog-gnutls, RPM rsyslog-gnutls): TLS to the
// audit receiver needs it, and rsyslogd would only find out at its first connection.
var RsyslogGTLSDriver = []string{"/usr/lib/*/rsyslog/lmnsd_gtls.so", "/usr/lib64/rsyslog/lmnsd_gtls.so", "/usr/lib/rsyslog/lmnsd_gtls.so"}

// RsyslogConfFile is compute-rsyslog.service's configuration (rendered, 0640).
func RsyslogConfFile(stateDir string) string { return filepath.Join(stateDir, "rsyslog.conf") }

// RsyslogAuditFile is the audit shipping compute-init set up for this lifecycle (JSON;
// absent without compliance audit): a reconfiguration keeps it as it is.
func RsyslogAuditFile(stateDir string) string { return filepath.Join(stateDir, "rsyslog-audit.json") }

// GDB is the debugger the postgres stop hook runs on a core file found in PGDATA (when
// the kernel writes cores there rather than to systemd-coredump).
const GDB = "/usr/bin/gdb"

// CorePatternFile is the kernel's core_pattern: where a crashed process's core goes.
const CorePatternFile = "/proc/sys/kernel/core_pattern"

// Vars are the defaults as text by environment variable name. The flag definitions take
// them by interpolation (kong's `default:"${PGDATA}"` with kong.Vars(paths.Vars())).
// AUTOSCALING is the one that is no flag's: it is here so that the tests hold
// packaging/default/compute-tools and the README to it like the others.
func Vars() map[string]string {
	return map[string]string{
		EnvStateDir:         DefaultStateDir,
		EnvConfigFile:       DefaultConfigFile,
		EnvPGData:           DefaultPGData,
		EnvPGBin:            DefaultPGBin,
		EnvConnstr:          DefaultConnstr,
		EnvComputeID:        DefaultComputeID,
		EnvPrivRole:         DefaultPrivRole,
		EnvExternalHTTPPort: strconv.Itoa(DefaultExternalHTTPPort),
		EnvInternalHTTPPort: strconv.Itoa(DefaultInternalHTTPPort),
		EnvInternalHTTPAddr: DefaultInternalHTTPAddr,
		EnvTLSPollInterval:  DefaultTLSPollInterval,
		EnvMonitorInterval:  DefaultMonitorInterval,
		EnvExtStatsInterval: DefaultExtStatsInterval,
		EnvTrimAfter:        DefaultTrimAfter,

		EnvBasebackupAttempts:     DefaultBasebackupAttempts,
		EnvPageserverIdleTimeout:  DefaultPageserverIdleTimeout,
		EnvSyncSafekeepersTimeout: DefaultSyncSafekeepersTimeout,
		EnvControlPlaneTimeout:    DefaultControlPlaneTimeout,
		EnvOnTerminated:           DefaultOnTerminated,

		EnvAPIReadHeaderTimeout: DefaultAPIReadHeaderTimeout,
		EnvAPIReadTimeout:       DefaultAPIReadTimeout,
		EnvAPIWriteTimeout:      DefaultAPIWriteTimeout,
		EnvAPIIdleTimeout:       DefaultAPIIdleTimeout,
		EnvAPIMaxConnections:    strconv.Itoa(DefaultAPIMaxConnections),
		EnvAPIMaxBodyBytes:      strconv.Itoa(DefaultAPIMaxBodyBytes),
		EnvAPIConfigureParses:   strconv.Itoa(DefaultAPIConfigureParses),

		EnvVMMonitorAddr:       DefaultVMMonitorAddr,
		EnvVMMonitorVsockPort:  strconv.Itoa(DefaultVMMonitorVsockPort),
		EnvVMMonitorCgroupUnit: DefaultVMMonitorCgroupUnit,
		EnvAutoscaling:         DefaultAutoscaling,

		EnvPgbouncerIni:           DefaultPgbouncerIni,
		EnvPgbouncerConnstr:       DefaultPgbouncerConnstr,
		EnvPgbouncerPidFile:       DefaultPgbouncerPidFile,
		EnvLocalProxyConfig:       DefaultLocalProxyConfig,
		EnvLocalProxyPidFile:      DefaultLocalProxyPidFile,
		EnvResizeSwapOnBind:       "false",
		EnvWarmup:                 "true",
		EnvInternalHTTPUsers:      DefaultInternalHTTPUsers,
		EnvInternalHTTPAdminUsers: DefaultInternalHTTPAdminUsers,
	}
}

// PendingConfigFile is where compute-api stores the config received by POST /configure,
// inside the state directory, for compute-init (a start) or compute-configure (a
// reconfiguration) to pick up.
func PendingConfigFile(stateDir string) string {
	return filepath.Join(stateDir, "config.pending.json")
}

// AppliedConfigFile is where compute-init leaves the config of the running compute, for
// the configure step, the stop hook, the lease loop and the API; a reconfiguration
// replaces it once the new config is applied.
func AppliedConfigFile(stateDir string) string {
	return filepath.Join(stateDir, "config.applied.json")
}

// NeonAuthTokenFile holds, in neon mode, the storage token that Postgres gets as
// NEON_AUTH_TOKEN (0600, owned by postgres). compute-postgres.service's ExecStart= shell,
// running as postgres, reads it: never systemd as root (an EnvironmentFile= here would
// be read by PID 1, following any symbolic link the postgres user planted in the state
// directory).
func NeonAuthTokenFile(stateDir string) string { return filepath.Join(stateDir, "neon-auth-token") }

// PGBinDir is the directory of the postgres binary; initdb and pg_ctl sit beside it.
func PGBinDir(pgbin string) string { return filepath.Dir(pgbin) }

// Sibling returns the path of a PostgreSQL tool next to the postgres binary.
func Sibling(pgbin, tool string) string { return filepath.Join(filepath.Dir(pgbin), tool) }
