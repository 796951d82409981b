// Package control does what compute-api's routes and its TLS renewal watcher do, without
// HTTP: accept a config and wait for its outcome (POST /configure), terminate (POST
// /terminate), re-run the configure step for a running compute (reconfigure),
// resubmit the applied config when the TLS certificate is renewed, carry out the
// post-termination action once the compute has ended (WatchEnd: where compute_ctl exits
// and ends its VM, stop compute.target or power off through systemd; a failure after
// running is left alone, unlike compute_ctl, see docs/architecture.md), and, over the
// Postgres interface (internal/pgops), the routes that read or change the running
// Postgres (postgres.go), and the compute-initiated refresh of the spec (POST
// /refresh_configuration, refresh.go). It works over narrow
// interfaces declared here (the state store's API operations, a wake-up source, the
// systemd units, the writer and reader of the config files); internal/api maps its
// results and errors to HTTP. A new route is one handler in internal/api plus one
// method here.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Store is the part of the state store the controller uses (*state.Store implements
// it): reading and waiting, and the lifecycle operations of the API (state.ActorAPI),
// each of which checks the status and changes it in one step under the store's lock.
type Store interface {
	Load() (state.Record, error)
	// LoadCached is Load that parses the file only when it changed; the record is shared.
	LoadCached() (state.Record, error)
	AcceptConfig(from []state.Status, fn func(*state.Record) error) (state.Status, state.Record, error)
	BeginTermination(immediate bool) (state.Status, state.Record, error)
	// The refresh of POST /refresh_configuration (refresh.go).
	RequestRefresh() (state.Record, error)
	BeginRefresh() (state.Record, error)
	FinishRefresh() (state.Record, error)
	RetryRefresh(a state.Actor, msg string) (state.Record, error)
	CompleteTermination(a state.Actor, lsn *string) (state.Record, bool, error)
	Fail(a state.Actor, msg string, during ...state.Status) (state.Record, bool, error)
	Wait(ctx context.Context, wake <-chan struct{}, recheck time.Duration, pred func(state.Record) bool) (state.Record, error)
}

// Waker delivers a wake-up whenever the state record may have changed (the D-Bus status
// signal). Subscribe must not miss a change that happens after it returns; cancel
// releases the subscription. Wake-ups may be coalesced.
type Waker interface {
	Subscribe() (wake <-chan struct{}, cancel func())
}

// Units drives the compute's systemd units.
type Units interface {
	// StopPostgres stops the Postgres unit and returns when the stop job is done. Its
	// stop hook moves the status to terminated (after the final safekeeper sync).
	StopPostgres(ctx context.Context, immediate bool) error
	// CancelStartup stops compute-init while it waits for a config.
	CancelStartup(ctx context.Context) error
	// Reconfigure re-runs the configure step (compute-configure.service), which applies
	// the pending config to the running Postgres.
	Reconfigure(ctx context.Context) error
	// PostgresActive reports whether the Postgres unit is running, which a failed compute
	// needs to be reconfigured.
	PostgresActive(ctx context.Context) (bool, error)
	// States reports the units' ActiveState= (Reconcile).
	States(ctx context.Context) (UnitStates, error)
}

// Companions ends the processes beside Postgres at /terminate (pgbouncer, local_proxy).
type Companions interface {
	// StopCompanions stops them; an error is logged, never a failed termination.
	StopCompanions(ctx context.Context) error
}

// Deps holds the dependencies of a Controller.
type Deps struct {
	Store Store
	// Waker may be nil: then state changes are noticed only by rechecking.
	Waker Waker
	Units Units
	// WritePendingConfig stores the raw config for compute-init, atomically. It is
	// called under the state lock, before the status leaves empty.
	WritePendingConfig func(raw []byte) error
	// LFC reaches compute-monitor's LFC methods; nil: the LFC routes answer that the
	// monitor is unavailable.
	LFC LFC
	// Postgres carries out the routes that read or change the running Postgres; nil:
	// they answer that there is no Postgres connection.
	Postgres Postgres
	// Companions, when set, stops pgbouncer and local_proxy at /terminate, before
	// Postgres (as compute_ctl's forward_termination_signal).
	Companions Companions
	// Promoter promotes Postgres for POST /promote (*promote.Postgres); nil: /promote
	// fails, saying so.
	Promoter Promoter
	// Tasks runs the work that outlives the request that began it (a promotion, a
	// refresh) among
	// the server's tasks, which shutdown cancels and waits for; nil: a goroutine of its
	// own that nothing cancels (tests that do not shut down).
	Tasks Tasks
	// ReadAppliedConfig returns the config the compute runs with (for WatchTLS and
	// POST /promote).
	ReadAppliedConfig func() ([]byte, error)
	// FetchConfig gets the compute's config from the control plane, for POST
	// /refresh_configuration; nil: no control plane (the request fails with
	// ErrNoControlPlane and the status stays).
	FetchConfig func(ctx context.Context) (*spec.ComputeConfig, error)
	Logger      *slog.Logger
	// Recheck is how often a blocked call re-reads the state even without a wake-up (a
	// safety net against a lost signal). Default 3 s.
	Recheck time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Tasks runs background work of the controller: fn gets a context that ends when the
// server shuts down, and the server waits for fn to return.
type Tasks interface {
	Go(fn func(ctx context.Context))
}

// goroutines is the Tasks of a Controller without a task group.
type goroutines struct{}

func (goroutines) Go(fn func(ctx context.Context)) { go fn(context.Background()) }

// Controller carries out the API's operations.
type Controller struct {
	// reconciled, when set (HoldUntilReconciled), is closed once Reconcile has run:
	// Configure, Terminate and Promote wait for it.
	reconciled     atomic.Pointer[chan struct{}]
	reconciledOnce sync.Once
	cfg            Deps
	log            *slog.Logger
	started        time.Time
	// tlsTried is the certificate digest WatchTLS last reconfigured for (its goroutine
	// only).
	tlsTried string
	// terminating counts the Terminate calls in progress: the post-termination action
	// waits for them to answer (WatchEnd).
	terminating inflight
	// promos is the promotion running in this process (POST /promote).
	promos promotions
	// refresh keeps the refreshes of POST /refresh_configuration one at a time.
	refreshMu sync.Mutex
	refresh   refresher
	refreshes sync.WaitGroup
}

// New builds a Controller. Nil optional fields get their defaults.
func New(cfg Deps) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 3 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tasks == nil {
		cfg.Tasks = goroutines{}
	}
	return &Controller{cfg: cfg, log: cfg.Logger, started: cfg.Now().UTC()}
}

// Load reads the record; before compute-init wrote one, the compute is empty since the
// controller started. It parses state.json only when the file changed
// (state.Store.LoadCached): the record is shared, callers must not modify it.
func (c *Controller) Load() (state.Record, error) {
	rec, err := c.cfg.Store.LoadCached()
	if errors.Is(err, state.ErrNoState) {
		return state.Record{Status: state.Empty, StartTime: c.started}, nil
	}
	return rec, err
}

// PendingConfigError is a failure to store the pending config.
type PendingConfigError struct{ Err error }

func (e *PendingConfigError) Error() string { return "store pending config: " + e.Err.Error() }

func (e *PendingConfigError) Unwrap() error { return e.Err }

// FailedError is an operation that ended with the compute failed; Msg says why (the
// record's error, or the step that could not be carried out).
type FailedError struct{ Msg string }

func (e *FailedError) Error() string { return e.Msg }

// StateError is a failure to read, change or wait for the state record itself.
type StateError struct {
	Op  string // "update state", "wait for state"
	Err error
}

func (e *StateError) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Err) }

func (e *StateError) Unwrap() error { return e.Err }

type loggerKey struct{}

// WithLogger returns a context whose operations log with l (for example a logger that
// carries the request ID).
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

func (c *Controller) logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return c.log
}

func (c *Controller) subscribe() (<-chan struct{}, func()) {
	if c.cfg.Waker == nil {
		return nil, func() {}
	}
	return c.cfg.Waker.Subscribe()
}

func (c *Controller) now() time.Time { return c.cfg.Now() }

func (c *Controller) unitsCall(fn func(Units) error) error {
	if c.cfg.Units == nil {
		return errors.New("no systemd units configured")
	}
	return fn(c.cfg.Units)
}

// wait blocks until the status is one of done.
func (c *Controller) wait(ctx context.Context, wake <-chan struct{}, done ...state.Status) (state.Record, error) {
	rec, err := c.cfg.Store.Wait(ctx, wake, c.cfg.Recheck, func(rec state.Record) bool {
		for _, s := range done {
			if rec.Status == s {
				return true
			}
		}
		return false
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return rec, err
		}
		return rec, &StateError{Op: "wait for state", Err: err}
	}
	return rec, nil
}

// stateError wraps a failed state change that is not one of the state package's typed
// refusals or a PendingConfigError.
func stateError(err error) error {
	var wrong *state.WrongStatusError
	var illegal *state.TransitionError
	var pending *PendingConfigError
	if errors.As(err, &wrong) || errors.As(err, &illegal) || errors.As(err, &pending) {
		return err
	}
	return &StateError{Op: "update state", Err: err}
}

// errorText is the record's error, or "unknown error".
func errorText(r state.Record) string {
	if r.Error == nil {
		return "unknown error"
	}
	return *r.Error
}
