// Package paths names every file, directory and helper binary the toolkit uses, in one
// place, with the defaults of an installed package. Tests and runs by hand override them.
package paths

import "path/filepath"

// Defaults of an installed package.
const (
	DefaultStateDir   = "/run/compute"
	DefaultConfigFile = "/etc/compute/config.json"
	DefaultPGData     = "/var/db/postgres/compute"
	DefaultPGBin      = "/usr/lib/postgresql/15/bin/postgres"
	DefaultSocketDir  = "/run/compute-postgres"
	DefaultPGPort     = 55432
	DefaultConnstr    = "postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres"
	DefaultPGUser     = "postgres"
	DefaultAdminRole  = "cloud_admin"
	DefaultPrivRole   = "neon_superuser"
	DefaultComputeID  = "compute-local"

	DefaultExternalHTTPPort = 3080
	DefaultInternalHTTPPort = 3081
	DefaultInternalHTTPAddr = "127.0.0.1"

	// Unit names.
	UnitTarget    = "compute.target"
	UnitAPI       = "compute-api.service"
	UnitInit      = "compute-init.service"
	UnitPostgres  = "compute-postgres.service"
	UnitConfigure = "compute-configure.service"
	UnitMonitor   = "compute-monitor.service"
)

// PendingConfigFile is where compute-api stores the config received by POST /configure,
// inside the state directory, for compute-init to pick up.
func PendingConfigFile(stateDir string) string { return filepath.Join(stateDir, "config.json") }

// PGBinDir is the directory of the postgres binary; initdb and pg_ctl sit beside it.
func PGBinDir(pgbin string) string { return filepath.Dir(pgbin) }

// Sibling returns the path of a PostgreSQL tool next to the postgres binary.
func Sibling(pgbin, tool string) string { return filepath.Join(filepath.Dir(pgbin), tool) }

// JWKSFile is where compute-init leaves the key set of a config fetched from the control
// plane, for compute-api to verify tokens with.
func JWKSFile(stateDir string) string { return filepath.Join(stateDir, "jwks.json") }

// SpecFile is where compute-init leaves the effective config (spec) of the running
// compute, for the configure step and the API.
func SpecFile(stateDir string) string { return filepath.Join(stateDir, "spec.json") }
