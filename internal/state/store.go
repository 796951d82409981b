package state

import (
	"github.com/computetools/compute-tools/internal/extstats"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/promote/promotestate"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/spec"
)

// Metrics are the startup timings of Neon's ComputeMetrics (/metrics.json).
type Metrics struct {
	WaitForSpecMs           uint64 `json:"wait_for_spec_ms"`
	SyncSKCheckMs           uint64 `json:"sync_sk_check_ms"`
	SyncSafekeepersMs       uint64 `json:"sync_safekeepers_ms"`
	PageserverConnectMicros uint64 `json:"pageserver_connect_micros"`
	BasebackupMs            uint64 `json:"basebackup_ms"`
	BasebackupBytes         uint64 `json:"basebackup_bytes"`
	StartPostgresMs         uint64 `json:"start_postgres_ms"`
	ConfigMs                uint64 `json:"config_ms"`
	TotalStartupMs          uint64 `json:"total_startup_ms"`
	LoadExtMs               uint64 `json:"load_ext_ms"`
	NumExtDownloaded        uint64 `json:"num_ext_downloaded"`
	LargestExtSize          uint64 `json:"largest_ext_size"`
	TotalExtDownloadSize    uint64 `json:"total_ext_download_size"`
}

// Counters are the Prometheus counters of compute_ctl that other units than compute-api
// count (compute-api serves them on /metrics). A counter must never go down, so they
// survive the reset of a new lifecycle; they start again from zero only when /run is
// emptied (a reboot), as a process's counters do when it restarts.
type Counters struct {
	// MigrationFailures: compute_ctl_db_migration_failed_total, by migration_id.
	MigrationFailures map[string]uint64 `json:"migration_failures,omitempty"`
	// CplaneRequests: compute_ctl_cplane_requests_total, by rpc, then http_status.
	CplaneRequests map[string]map[string]uint64 `json:"cplane_requests,omitempty"`
	// RemoteExtRequests: compute_ctl_remote_ext_requests_total, by http_status, then
	// filename.
	RemoteExtRequests map[string]map[string]uint64 `json:"remote_ext_requests,omitempty"`
	// PGDowntimeMsTotal: compute_pg_downtime_ms_total, the time Postgres could not be
	// reached by compute-monitor's rounds (written by the monitor, coalesced).
	PGDowntimeMsTotal uint64 `json:"pg_downtime_ms_total,omitempty"`
	// LFC: compute_ctl_lfc_prewarms_total, ..._prewarm_errors_total, ..._offloads_total
	// and ..._offload_errors_total, written by compute-monitor with Record.LFC.
	LFC lfcstate.Counters `json:"lfc"`
}

// CountCplaneRequest counts one control-plane request (compute_ctl_cplane_requests_total).
func (s *Store) CountCplaneRequest(rpc, httpStatus string) error {
	return s.count(func(c *Counters) { add(&c.CplaneRequests, rpc, httpStatus) })
}

// CountRemoteExtRequest counts one extension gateway request
// (compute_ctl_remote_ext_requests_total).
func (s *Store) CountRemoteExtRequest(httpStatus, filename string) error {
	return s.count(func(c *Counters) { add(&c.RemoteExtRequests, httpStatus, filename) })
}

// CountMigrationFailure counts one failed run of a migration
// (compute_ctl_db_migration_failed_total).
func (s *Store) CountMigrationFailure(id string) error {
	return s.count(func(c *Counters) {
		if c.MigrationFailures == nil {
			c.MigrationFailures = map[string]uint64{}
		}
		c.MigrationFailures[id]++
	})
}

// CplaneRequestHook returns a hook for the control-plane client that counts each request
// of rpc with CountCplaneRequest; a failure to count is logged, never the request's
// failure.
func (s *Store) CplaneRequestHook(rpc string) func(httpStatus string) {
	return func(httpStatus string) { s.warnIf("control plane request", s.CountCplaneRequest(rpc, httpStatus)) }
}

// RemoteExtRequestHook returns a hook for the extension downloader that counts each
// gateway request with CountRemoteExtRequest; a failure to count is logged, never the
// request's failure.
func (s *Store) RemoteExtRequestHook() func(httpStatus, filename string) {
	return func(httpStatus, filename string) {
		s.warnIf("extension gateway request", s.CountRemoteExtRequest(httpStatus, filename))
	}
}

func (s *Store) count(fn func(*Counters)) error {
	_, err := s.Update(func(r *Record) error {
		fn(&r.Counters)
		return nil
	})
	return err
}

func (s *Store) warnIf(what string, err error) {
	if err != nil {
		s.logger().Warn("could not count the "+what, "err", err)
	}
}

func (s *Store) logger() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// Announce makes every write announced through emit (the D-Bus StatusChanged signal, with
// the record's status and seq): it sets OnChange. A failed announcement is logged, never
// the write's failure (a signal is only a wake-up hint; waiters re-read the record).
func (s *Store) Announce(emit func(status string, seq uint64) error) {
	s.OnChange = func(r Record) {
		if err := emit(string(r.Status), r.Seq); err != nil {
			s.logger().Warn("announce status", "err", err)
		}
	}
}

// add counts one event in a two-level counter map, making the maps as needed.
func add(m *map[string]map[string]uint64, a, b string) {
	if *m == nil {
		*m = map[string]map[string]uint64{}
	}
	if (*m)[a] == nil {
		(*m)[a] = map[string]uint64{}
	}
	(*m)[a][b]++
}

// Record is the compute's state as kept in state.json. Every unit reads it; every change
// goes through Store.
type Record struct {
	Status     Status     `json:"status"`
	Error      *string    `json:"error"`
	StartTime  time.Time  `json:"start_time"`
	LastActive *time.Time `json:"last_active"`
	Tenant     *string    `json:"tenant"`
	Timeline   *string    `json:"timeline"`
	// Mode is primary, static or replica once a spec is known.
	Mode spec.ModeType `json:"mode,omitempty"`
	// Storage is "standalone" or "neon" once a spec is known.
	Storage spec.StorageMode `json:"storage,omitempty"`
	// TerminateLSN is the LSN /terminate answers with (null in standalone mode).
	TerminateLSN *string `json:"terminate_lsn"`
	Metrics      Metrics `json:"metrics"`
	// MigrationID is the last migration applied (neon_migration.migration_id).
	MigrationID int `json:"migration_id,omitempty"`
	// Counters are kept across lifecycles (a reset carries them over).
	Counters Counters `json:"counters"`
	// InitInvocation is the systemd invocation ID of the compute-init run that began this
	// lifecycle; compute-api waits for it when the compute starts.
	InitInvocation string `json:"init_invocation,omitempty"`
	// TLSCertDigest is the SHA-256 of the TLS certificate installed in PGDATA (empty
	// without TLS); compute-api's renewal watcher compares the file with it.
	TLSCertDigest string `json:"tls_cert_digest,omitempty"`
	// PrepareDoneAt is when compute-init finished; used for the startup breakdown.
	PrepareDoneAt *time.Time `json:"prepare_done_at,omitempty"`
	// PGCurrentDowntimeMs is compute_pg_current_downtime_ms: how long Postgres has been
	// unreachable for compute-monitor's rounds (0 while it answers); written by the monitor
	// during an outage at most once a second (the first failed round is written at once
	// unless the downtime figures were written less than a second before), and at
	// recovery. It is also the part of the current outage already added to
	// Counters.PGDowntimeMsTotal (both are written together).
	PGCurrentDowntimeMs uint64 `json:"pg_current_downtime_ms,omitempty"`
	// PGDownSince is when the current outage began (wall time: the end of the monitor's
	// last successful round, or its start); nil while Postgres answers. A restarted
	// monitor (the watchdog restarts it during an outage) resumes the outage from it.
	PGDownSince *time.Time `json:"pg_down_since,omitempty"`
	// LFC is this lifecycle's LFC prewarm and offload state (GET /lfc/prewarm and
	// /lfc/offload), published by compute-monitor at every change and, while a prewarm
	// runs, with its progress at most once a second; nil until the monitor published one
	// (the initial states: not_prewarmed, not_offloaded). A new lifecycle starts without
	// it (a new Postgres has an empty LFC); its counters are in Counters.LFC.
	LFC *lfcstate.States `json:"lfc,omitempty"`
	// InstalledExtensions is compute-monitor's latest collection of the extensions
	// installed in the databases (compute_installed_extensions); nil until the first
	// one of this lifecycle.
	InstalledExtensions *extstats.Stats `json:"installed_extensions,omitempty"`
	// AuditLogDirSize is compute_audit_log_dir_size: the bytes of the files whose name
	// ends in "log" in PGDATA/log, measured by compute-monitor after each clean-up of old
	// audit files (every 60 s while a compute with compliance audit runs); nil until the
	// first one of this lifecycle.
	AuditLogDirSize *uint64 `json:"audit_log_dir_size,omitempty"`
	// EndedFrom is the status the compute left for failed or terminated (empty in any
	// other status): termination_pending_fast or _immediate tells compute-api how long to
	// linger before its post-termination action (internal/control's WatchEnd).
	EndedFrom Status `json:"ended_from,omitempty"`
	// HasRun: this lifecycle reached running at least once (so a failure after it is not
	// a failed start).
	HasRun bool `json:"has_run,omitempty"`
	// Promotion is this lifecycle's promotion of a replica (POST /promote); nil until the
	// first one. It changes only through BeginPromotion and EndPromotion (promotion.go).
	Promotion *promotestate.Promotion `json:"promotion,omitempty"`
	// Seq grows by one with every write, so a reader can tell records apart.
	Seq       uint64    `json:"seq"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SetError sets the error text (empty clears it).
func (r *Record) SetError(msg string) {
	if msg == "" {
		r.Error = nil
		return
	}
	r.Error = &msg
}

// File names inside the state directory.
const (
	StateFile = "state.json"
	LockFile  = "state.lock"
)

// Store reads and writes the state record. It is safe for concurrent use by several
// processes: writers hold an exclusive flock on state.lock.
type Store struct {
	dir string
	// OnChange, when set, is called after every successful write with the new record
	// (outside the lock). Units use it to announce the change on D-Bus.
	OnChange func(Record)
	// Log receives the failures of the request hooks to count (nil: slog.Default()).
	Log *slog.Logger
	now func() time.Time
	// cache is LoadCached's.
	cache loadCache
}

// Open returns a store in dir, creating the directory (0750) if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	return &Store{dir: dir, now: time.Now}, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// Path is the path of state.json.
func (s *Store) Path() string { return filepath.Join(s.dir, StateFile) }

// ErrNoState is returned by Load when no record has been written yet.
var ErrNoState = errors.New("no compute state yet")

// maxRecord bounds what Load reads; a record is a few KiB.
const maxRecord = 64 << 20

// Load reads the current record without taking the lock (writes are atomic renames). The
// file is read as atomicfile.ReadFile does (no symbolic link, a regular file, bounded):
// the directory is writable by postgres and read by root.
func (s *Store) Load() (Record, error) {
	b, err := atomicfile.ReadFile(s.Path(), maxRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, ErrNoState
	}
	if err != nil {
		return Record{}, fmt.Errorf("read state: %w", err)
	}
	return s.decode(b)
}

// decode parses the content of state.json.
func (s *Store) decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("parse %s: %w", s.Path(), err)
	}
	if !r.Status.Valid() {
		return Record{}, fmt.Errorf("parse %s: unknown status %q", s.Path(), r.Status)
	}
	return r, nil
}

// Update applies fn to the current record under the lock and writes the result: for the
// fields other than the status (metrics, counters, tenant, ...). A change of the status is
// refused (a TransitionError for a move the table forbids, ErrStatusByUpdate otherwise):
// the status moves only through the lifecycle operations (lifecycle.go). With no record
// yet, fn starts from a fresh empty record.
func (s *Store) Update(fn func(*Record) error) (Record, error) {
	return s.update(func(r *Record) error {
		from, promotion := r.Status, clonePromotion(r.Promotion)
		if err := fn(r); err != nil {
			return err
		}
		if !reflect.DeepEqual(r.Promotion, promotion) {
			return ErrPromotionByUpdate
		}
		if r.Status != from {
			if !CanTransition(from, r.Status) {
				return &TransitionError{From: from, To: r.Status}
			}
			return fmt.Errorf("%w (%s -> %s)", ErrStatusByUpdate, from, r.Status)
		}
		return nil
	})
}

// clonePromotion is a deep copy of p (nil for nil).
func clonePromotion(p *promotestate.Promotion) *promotestate.Promotion {
	if p == nil {
		return nil
	}
	c := *p
	if p.EndedAt != nil {
		t := *p.EndedAt
		c.EndedAt = &t
	}
	return &c
}

// ErrPromotionByUpdate refuses a change of the promotion made through Update.
var ErrPromotionByUpdate = errors.New("the promotion changes only through BeginPromotion and EndPromotion")

// ErrStatusByUpdate refuses a status change made through Update.
var ErrStatusByUpdate = errors.New("the status changes only through a lifecycle operation")

// update applies fn under the lock and writes the result; a change of the status must be
// legal (see CanTransition). The lifecycle operations build on it.
func (s *Store) update(fn func(*Record) error) (Record, error) {
	unlock, err := s.lock()
	if err != nil {
		return Record{}, err
	}
	cur, err := s.Load()
	if errors.Is(err, ErrNoState) {
		cur = Record{Status: Empty, StartTime: s.now().UTC()}
	} else if err != nil {
		unlock()
		return Record{}, err
	}
	next := cur
	if err := fn(&next); err != nil {
		unlock()
		return cur, err
	}
	if !CanTransition(cur.Status, next.Status) {
		unlock()
		return cur, &TransitionError{From: cur.Status, To: next.Status}
	}
	if err := s.write(&next, cur.Seq); err != nil {
		unlock()
		return cur, err
	}
	unlock()
	if s.OnChange != nil {
		s.OnChange(next)
	}
	return next, nil
}

// transition moves the record to status to, applying fn (may be nil) to the other
// fields, for any actor: the raw primitive under the operations, kept for this package's
// tests.
func (s *Store) transition(to Status, fn func(*Record)) (Record, error) {
	return s.update(func(r *Record) error {
		if !CanTransition(r.Status, to) {
			return &TransitionError{From: r.Status, To: to}
		}
		r.Status = to
		if fn != nil {
			fn(r)
		}
		return nil
	})
}

// reset starts a new lifecycle: the record becomes a fresh "empty" one, whatever the
// status was.
func (s *Store) reset() (Record, error) {
	r, _, err := s.resetUnless(nil, nil)
	return r, err
}

// resetUnless starts a new lifecycle unless keep approves the current record; all under
// the lock, so that no other writer can slip in between the check and the reset. cleanup,
// when set, runs under the lock just before a reset is written (to remove files that
// belong to the old lifecycle). It returns the resulting record and whether it reset.
func (s *Store) resetUnless(keep func(Record) bool, cleanup func() error) (Record, bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return Record{}, false, err
	}
	var seq uint64
	cur, err := s.Load()
	if err == nil {
		seq = cur.Seq
		if keep != nil && keep(cur) {
			unlock()
			return cur, false, nil
		}
	}
	if cleanup != nil {
		if err := cleanup(); err != nil {
			unlock()
			return cur, false, err
		}
	}
	r := Record{Status: Empty, StartTime: s.now().UTC(), Counters: cur.Counters}
	err = s.write(&r, seq)
	unlock()
	if err != nil {
		return Record{}, false, err
	}
	if s.OnChange != nil {
		s.OnChange(r)
	}
	return r, true, nil
}

func (s *Store) write(r *Record, prevSeq uint64) error {
	r.Seq = prevSeq + 1
	r.UpdatedAt = s.now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	b = append(b, '\n')
	if err := atomicfile.Write(s.Path(), b, atomicfile.Options{Mode: 0o644}); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func (s *Store) lock() (func(), error) {
	p := filepath.Join(s.dir, LockFile)
	// Read-only is enough for flock, so a lock file created by root still works for
	// units that run as postgres. O_NOFOLLOW: a link planted by postgres must not make
	// root create or open a file elsewhere.
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// Wait blocks until pred holds for the current record, re-reading the record whenever
// wake fires (a D-Bus status signal) and, as a safety net against a lost signal, every
// recheck interval. It returns the record that satisfied pred.
func (s *Store) Wait(ctx context.Context, wake <-chan struct{}, recheck time.Duration, pred func(Record) bool) (Record, error) {
	if recheck <= 0 {
		recheck = 5 * time.Second
	}
	t := time.NewTicker(recheck)
	defer t.Stop()
	for {
		r, err := s.Load()
		if err != nil && !errors.Is(err, ErrNoState) {
			return r, err
		}
		if err == nil && pred(r) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-wake:
		case <-t.C:
		}
	}
}
