// Package extstats is the installed-extensions statistics of a compute: how many
// databases have each version of each extension installed, and whether the bootstrap
// superuser owns it. It is the compute_installed_extensions{extension_name, version,
// owned_by_superuser} gauge and the "[NEON_EXT_STAT] <json>" log line of Neon's
// compute_ctl (compute_tools/src/installed_extensions.rs, compute.rs, reference commit
// 53a05e8ccb).
//
// This package is the standard library only: the Stats type (a stable JSON form that
// lives in the state record, which every binary reads, compute-init included), the
// aggregation (Tally), the collection interval (Interval) and the schedule (Scheduler).
// The two halves with heavier dependencies are subpackages, so that the state record
// does not pull them into every binary (internal/archtest holds this package to the
// standard library):
//
//   - extstats/pgcollect reads the statistics from Postgres (pgx): the databases
//     `WHERE datallowconn AND datconnlimit <> -2`, at most 500, then
//     `SELECT extname, extversion, extowner FROM pg_catalog.pg_extension` in each, as
//     the admin role with application_name compute_ctl:get_installed_extensions;
//   - extstats/extprom turns Stats into the Prometheus gauge for compute-api's /metrics.
//
// # The reference's schedule, and ours
//
// The reference keeps an atomic "collection interval" in seconds: the command line's
// --installed-extensions-collection-interval (3600 by default) at process start, then,
// at every spec apply of a primary and every reconfiguration (any mode), a value from
// the spec's suspend_timeout_seconds: -1 (never suspend) or 0 (the default) store 3600,
// any other value is stored as it is. It collects:
//
//  1. once when a primary starts, in the background, right after configure_as_primary
//     (the spec apply) and before the status is running;
//  2. then, from the moment the compute is running (in every mode), in a loop that
//     starts with I = 2 x the atomic value and then, forever: sleep I; collect;
//     I = max(I, 2 x the atomic value). A reconfiguration therefore takes effect only
//     after the sleep under way and the collection after it, and the interval never
//     shrinks within a compute's life. A failed collection is logged and the loop goes
//     on.
//
// Why twice the suspend timeout: each collection opens one session per database, which
// raises pg_stat_database.sessions, and the activity monitor's experimental stats rule
// (activity_monitor_experimental) counts that as activity. Collecting at least two
// suspend timeouts apart leaves a whole suspend timeout without such sessions, so the
// collector alone never keeps an idle compute awake.
//
// Scheduler does exactly this loop (Base plays the atomic value: it is read when Run
// starts and after each collection), with AtStart for step 1. Interval is the atomic
// value computed from the spec. With AtStart the first wait begins when the first
// collection ends (in the reference the two overlap: the loop starts sleeping while the
// start's collection runs), which moves the schedule by one collection's duration.
//
// # Where this differs from the reference, on purpose
//
//   - Published state, not a process-global gauge. The reference sets a GaugeVec that
//     it never resets: an extension dropped everywhere, or updated from 1.5 to 1.6,
//     keeps its old series (with its old count) until compute_ctl restarts, so sums
//     over versions count databases twice and a dropped extension never goes away.
//     Here each successful collection replaces the whole set (Stats), and the gauge is
//     built from the latest set at scrape time, so it shows what is installed now. A
//     failed collection publishes nothing: the previous set stays.
//   - A database that cannot be read (dropped since the listing, connection refused,
//     timeout) is skipped with a warning and counted in Stats.SkippedDatabases; the
//     collection fails only when no listed database could be read. The reference
//     aborts the whole collection at the first such database, so one database it
//     cannot enter stops the statistics for good.
//   - The database list is ordered by OID before the limit of 500, so a compute with
//     more databases always reports the same (oldest) ones; the reference's LIMIT has
//     no ORDER BY and takes whatever the scan returns first.
//   - Interval: -1, 0 and any other value <= 0 give the command line's default (the
//     reference stores a hard-coded 3600 for -1 and 0, overriding a non-default
//     command line value at the first apply, and turns other negative values into
//     huge unsigned ones); the spec's value counts in every mode (the reference
//     updates it at a primary's apply and at reconfigurations only).
//   - Every database read and the whole collection are bounded by timeouts (the
//     reference has none).
//   - Scheduler.Last lets a restarted compute-monitor keep the schedule (the next
//     collection is due a whole interval after the last one recorded in the state
//     record) instead of collecting at once: a monitor restarted in a loop would
//     otherwise open sessions in every database at each restart.
//   - The log line's message is "[NEON_EXT_STAT] " followed by the reference's JSON
//     ({"extensions":[{"extname","version","n_databases","owned_by_superuser"}]}), but
//     our logs are logfmt, so the message is quoted (msg="[NEON_EXT_STAT] {\"...\"}"):
//     a reader unquotes the msg value first. A failed collection is a warning (the
//     reference logs an error; it does not fail the compute).
//
// "Owned by superuser" is the reference's test: the owner is OID 10, the bootstrap
// superuser (cloud_admin on a Neon compute); an extension owned by any other role,
// superuser or not, counts as "0".
package extstats

import (
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"time"
)

// BootstrapSuperuserOID is the OID of the role initdb creates (BOOTSTRAP_SUPERUSERID):
// an extension it owns is "owned by superuser".
const BootstrapSuperuserOID = 10

// Label values of Extension.OwnedBySuperuser.
const (
	Superuser    = "1"
	NotSuperuser = "0"
)

// Extension is one (name, version, owner kind) and the number of databases that have it:
// the reference's InstalledExtension, one series of compute_installed_extensions.
type Extension struct {
	Name    string `json:"extname"`
	Version string `json:"version"`
	// NDatabases is the number of databases with this version installed, owned as
	// OwnedBySuperuser says.
	NDatabases int `json:"n_databases"`
	// OwnedBySuperuser is "1" (Superuser) when the bootstrap superuser owns the
	// extension, else "0" (NotSuperuser): a string as in the reference's JSON and the
	// metric's label.
	OwnedBySuperuser string `json:"owned_by_superuser"`
}

// Stats is one complete collection. Its JSON is stable: Extensions is sorted by name,
// version, then owner kind, and never null.
type Stats struct {
	// Extensions as the reference reports them.
	Extensions []Extension `json:"extensions"`
	// CollectedAt is when the collection ended.
	CollectedAt time.Time `json:"collected_at"`
	// Databases is how many databases were read.
	Databases int `json:"databases"`
	// SkippedDatabases is how many listed databases could not be read (each logged);
	// their extensions are not counted.
	SkippedDatabases int `json:"skipped_databases,omitempty"`
}

// Installed is one row of pg_extension.
type Installed struct {
	Name    string
	Version string
	Owner   uint32 // extowner
}

type key struct{ name, version, owned string }

// Tally aggregates the extensions of databases into Stats. The zero value is ready.
type Tally struct {
	counts  map[key]int
	dbs     int
	skipped int
}

// AddDatabase counts the extensions installed in one database (its pg_extension rows;
// an extension appears at most once per database).
func (t *Tally) AddDatabase(exts []Installed) {
	if t.counts == nil {
		t.counts = map[key]int{}
	}
	t.dbs++
	for _, e := range exts {
		owned := NotSuperuser
		if e.Owner == BootstrapSuperuserOID {
			owned = Superuser
		}
		t.counts[key{e.Name, e.Version, owned}]++
	}
}

// SkipDatabase counts a database that could not be read.
func (t *Tally) SkipDatabase() { t.skipped++ }

// Databases returns how many databases were added and skipped so far.
func (t *Tally) Databases() (read, skipped int) { return t.dbs, t.skipped }

// Stats returns the aggregate, sorted, collected at at.
func (t *Tally) Stats(at time.Time) Stats {
	exts := make([]Extension, 0, len(t.counts))
	for k, n := range t.counts {
		exts = append(exts, Extension{Name: k.name, Version: k.version, NDatabases: n, OwnedBySuperuser: k.owned})
	}
	Sort(exts)
	return Stats{Extensions: exts, CollectedAt: at, Databases: t.dbs, SkippedDatabases: t.skipped}
}

// Sort orders exts by name, version, then owner kind (the order of Stats.Extensions).
func Sort(exts []Extension) {
	slices.SortFunc(exts, func(a, b Extension) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version),
			cmp.Compare(a.OwnedBySuperuser, b.OwnedBySuperuser))
	})
}

// LogTag starts the log line of every successful collection, as in the reference.
const LogTag = "[NEON_EXT_STAT]"

// LogMessage is the message of the log line of a collection: LogTag, a space and the
// reference's JSON, {"extensions":[...]} (the fields of Stats beyond Extensions are not
// in it).
func LogMessage(s Stats) string {
	exts := s.Extensions
	if exts == nil {
		exts = []Extension{}
	}
	b, err := json.Marshal(struct {
		Extensions []Extension `json:"extensions"`
	}{exts})
	if err != nil { // strings and ints only: cannot happen
		return LogTag + " {}"
	}
	return LogTag + " " + string(b)
}

// DefaultInterval is the command line's default base interval, as the reference's
// --installed-extensions-collection-interval (3600 s).
const DefaultInterval = time.Hour

// maxBase keeps 2 x the base interval within time.Duration.
const maxBase = time.Duration(math.MaxInt64 / 2)

// Interval is the base interval (the reference's atomic value; Scheduler waits twice
// it) for a spec's suspend_timeout_seconds: its value when positive, else (-1: never
// suspend; 0: default) cliDefault. A cliDefault <= 0 means DefaultInterval. Absurdly
// large values are capped so that twice the result still fits in a Duration.
func Interval(suspendTimeoutSeconds int64, cliDefault time.Duration) time.Duration {
	if suspendTimeoutSeconds <= 0 {
		if cliDefault <= 0 {
			return DefaultInterval
		}
		return min(cliDefault, maxBase)
	}
	if suspendTimeoutSeconds > int64(maxBase/time.Second) {
		return maxBase
	}
	return time.Duration(suspendTimeoutSeconds) * time.Second
}
