// Package spec holds the compute configuration model that Neon's control plane sends:
// ComputeConfig, ComputeCtlConfig and ComputeSpec with every nested type, using Neon's
// exact JSON spellings. It parses and validates, and depends on the standard library only.
package spec

import (
	"encoding/json"
)

// ComputeConfig is the body of the config file, of the control plane's answer and of
// POST /configure: an optional spec plus the compute_ctl settings.
type ComputeConfig struct {
	// Spec is nil for a pooled ("empty") compute that waits for /configure.
	Spec *ComputeSpec `json:"spec"`
	// ComputeCtlConfig is required by Neon; a body without it is rejected.
	ComputeCtlConfig *ComputeCtlConfig `json:"compute_ctl_config"`
}

// ComputeCtlConfig carries the keys that verify API tokens and optional TLS files.
type ComputeCtlConfig struct {
	// JWKS is kept as raw JSON (an RFC 7517 key set); the api package parses the keys.
	JWKS json.RawMessage `json:"jwks"`
	TLS  *TLSConfig      `json:"tls,omitempty"`
}

// TLSConfig names the key and certificate files for Postgres TLS.
type TLSConfig struct {
	KeyPath  string `json:"key_path"`
	CertPath string `json:"cert_path"`
}

// ControlPlaneConfigResponse is the control plane's answer to a spec request.
type ControlPlaneConfigResponse struct {
	Spec             *ComputeSpec      `json:"spec"`
	Status           string            `json:"status"` // "empty" or "attached"
	ComputeCtlConfig *ComputeCtlConfig `json:"compute_ctl_config"`
}

// ComputeSpec is the desired state of the compute (Neon's libs/compute_api spec.rs).
type ComputeSpec struct {
	FormatVersion      float64  `json:"format_version"`
	OperationUUID      *string  `json:"operation_uuid,omitempty"`
	Features           []string `json:"features,omitempty"`
	SwapSizeBytes      *uint64  `json:"swap_size_bytes,omitempty"`
	DiskQuotaBytes     *uint64  `json:"disk_quota_bytes,omitempty"`
	DisableLFCResizing *bool    `json:"disable_lfc_resizing,omitempty"`

	Cluster Cluster `json:"cluster"`
	// DeltaOperations keeps the difference between null and [] so that a parsed spec
	// re-marshals to an equal value.
	DeltaOperations []DeltaOp `json:"delta_operations"`

	SkipPgCatalogUpdates bool `json:"skip_pg_catalog_updates,omitempty"`

	TenantID             *string `json:"tenant_id,omitempty"`
	TimelineID           *string `json:"timeline_id,omitempty"`
	PageserverConnstring *string `json:"pageserver_connstring,omitempty"`
	// PageserverConnectionInfo (Neon main) takes precedence over PageserverConnstring
	// and the neon.pageserver_connstring GUC.
	PageserverConnectionInfo *PageserverConnectionInfo `json:"pageserver_connection_info,omitempty"`
	ProjectID                *string                   `json:"project_id,omitempty"`
	BranchID                 *string                   `json:"branch_id,omitempty"`
	EndpointID               *string                   `json:"endpoint_id,omitempty"`
	SafekeepersGeneration    *uint32                   `json:"safekeepers_generation,omitempty"`
	SafekeeperConnstrings    []string                  `json:"safekeeper_connstrings,omitempty"`

	Mode ComputeMode `json:"mode"`

	StorageAuthToken *string `json:"storage_auth_token,omitempty"`

	RemoteExtensions  *RemoteExtSpec    `json:"remote_extensions,omitempty"`
	PgbouncerSettings *OrderedStringMap `json:"pgbouncer_settings,omitempty"`
	ShardStripeSize   *uint64           `json:"shard_stripe_size,omitempty"`
	LocalProxyConfig  *LocalProxySpec   `json:"local_proxy_config,omitempty"`

	// ReconfigureConcurrency defaults to 1 when absent.
	ReconfigureConcurrency int `json:"reconfigure_concurrency"`

	DropSubscriptionsBeforeStart bool `json:"drop_subscriptions_before_start,omitempty"`

	AuditLogLevel ComputeAudit `json:"audit_log_level"`

	LogsExportHost            *string `json:"logs_export_host,omitempty"`
	EndpointStorageAddr       *string `json:"endpoint_storage_addr,omitempty"`
	EndpointStorageToken      *string `json:"endpoint_storage_token,omitempty"`
	Autoprewarm               bool    `json:"autoprewarm,omitempty"`
	OffloadLFCIntervalSeconds *uint64 `json:"offload_lfc_interval_seconds,omitempty"`

	// SuspendTimeoutSeconds is required by Neon (neon_local sends -1).
	SuspendTimeoutSeconds int64 `json:"suspend_timeout_seconds"`
}

// Cluster is the desired catalog and configuration.
type Cluster struct {
	ClusterID      *string    `json:"cluster_id,omitempty"`
	Name           *string    `json:"name,omitempty"`
	State          *string    `json:"state,omitempty"`
	Roles          []Role     `json:"roles"`
	Databases      []Database `json:"databases"`
	PostgresqlConf *string    `json:"postgresql_conf,omitempty"`
	// Settings distinguishes null (no "Managed by compute_ctl" block in
	// postgresql.conf) from [] (an empty block), as Neon does.
	Settings GenericOptions `json:"settings"`
}

// Role is a desired role. EncryptedPassword is an md5 hash without the "md5" prefix or a
// full SCRAM-SHA-256 verifier; nil means no password.
type Role struct {
	Name              string         `json:"name"`
	EncryptedPassword *string        `json:"encrypted_password"`
	Options           GenericOptions `json:"options"`
}

// Database is a desired database. RestrictConn and Invalid are output-only in Neon
// (emitted by /dbs_and_roles, ignored on input).
type Database struct {
	Name         string         `json:"name"`
	Owner        string         `json:"owner"`
	Options      GenericOptions `json:"options"`
	RestrictConn bool           `json:"-"`
	Invalid      bool           `json:"-"`
}

// GenericOption is a name/value pair; only vartype "string" values are quoted when rendered.
type GenericOption struct {
	Name    string  `json:"name"`
	Value   *string `json:"value"`
	Vartype string  `json:"vartype"`
}

// GenericOptions is a list of options; null and absent are both nil.
type GenericOptions []GenericOption

// Find returns the value of the named option (nil when absent or valueless).
func (o GenericOptions) Find(name string) (string, bool) {
	for _, opt := range o {
		if opt.Name == name && opt.Value != nil {
			return *opt.Value, true
		}
	}
	return "", false
}

// DeltaOp is a rename or delete of a role or database.
type DeltaOp struct {
	Action  string  `json:"action"`
	Name    string  `json:"name"`
	NewName *string `json:"new_name,omitempty"`
}

// Delta operation actions that Neon acts on; others are ignored.
const (
	DeltaDeleteDB   = "delete_db"
	DeltaRenameDB   = "rename_db"
	DeltaDeleteRole = "delete_role"
	DeltaRenameRole = "rename_role"
)

// RemoteExtSpec is the remote extension catalogue.
type RemoteExtSpec struct {
	PublicExtensions []string                 `json:"public_extensions"`
	CustomExtensions []string                 `json:"custom_extensions"`
	LibraryIndex     map[string]string        `json:"library_index"`
	ExtensionData    map[string]ExtensionData `json:"extension_data"`
}

// ExtensionData holds an extension's control files.
type ExtensionData struct {
	ControlData map[string]string `json:"control_data"`
	ArchivePath string            `json:"archive_path"`
}

// LocalProxySpec configures local_proxy; its JWKS role names change role creation.
type LocalProxySpec struct {
	JWKS []JWKSSettings `json:"jwks"`
	TLS  *TLSConfig     `json:"tls,omitempty"`
}

// JWKSSettings is one JWKS source of local_proxy.
type JWKSSettings struct {
	ID           string   `json:"id"`
	RoleNames    []string `json:"role_names"`
	JWKSURL      string   `json:"jwks_url"`
	ProviderName string   `json:"provider_name"`
	JWTAudience  *string  `json:"jwt_audience,omitempty"`
}
