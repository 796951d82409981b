package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/computetools/compute-tools/internal/spec"
)

// The lifecycle operations below are the only way the status changes. Each names its
// intent, checks its own guard under the store's lock, and is made on behalf of an actor
// (fixed by the operation, or passed for the operations several actors share): a move
// outside the actor's row of actorMoves is refused with an ActorError, a move outside the
// transition table with a TransitionError. Their fn arguments set the other fields of the
// record in the same write; fn may not change the status itself.

// ErrAlreadyTerminated is returned by BeginTermination for a terminated compute, with the
// terminated record.
var ErrAlreadyTerminated = errors.New("already terminated")

// errStatusInFn refuses an fn that changed the status behind its operation's back.
var errStatusInFn = errors.New("a lifecycle operation's fn may not change the status")

// move changes the status to `to` on behalf of actor a, with fn (may be nil) applied to
// the other fields first.
func (s *Store) move(a Actor, to Status, fn func(*Record) error) (Record, error) {
	return s.update(func(r *Record) error {
		return moveRecord(r, a, to, fn)
	})
}

func moveRecord(r *Record, a Actor, to Status, fn func(*Record) error) error {
	from := r.Status
	if !CanTransition(from, to) || from == to {
		return &TransitionError{From: from, To: to}
	}
	if !CanMove(a, from, to) {
		return &ActorError{Actor: a, From: from, To: to}
	}
	if fn != nil {
		if err := fn(r); err != nil {
			return err
		}
		if r.Status != from {
			return errStatusInFn
		}
	}
	r.Status = to
	switch {
	case to == Failed || to == Terminated:
		r.EndedFrom = from
	default:
		r.EndedFrom = ""
	}
	if to == Running {
		r.HasRun = true
	}
	return nil
}

// BeginLifecycle starts a new lifecycle for compute-init: a record left by an earlier
// lifecycle becomes a fresh empty one (counters kept), unless it already holds news for
// this one: empty (fresh), configuration_pending (a POST /configure came first) or
// termination_pending_* (a /terminate came first). cleanup, when set, runs under the lock
// just before a reset is written (to remove the files of the old lifecycle). It returns
// the resulting record and whether it reset. Only an actor of lifecycleStarters
// (compute-init) may begin a lifecycle.
func (s *Store) BeginLifecycle(a Actor, cleanup func() error) (Record, bool, error) {
	if !MayBeginLifecycle(a) {
		return Record{}, false, &ActorError{Actor: a, To: Empty}
	}
	return s.resetUnless(keepForNewLifecycle, cleanup)
}

// keepForNewLifecycle is BeginLifecycle's guard: records that already belong to the new
// lifecycle.
func keepForNewLifecycle(r Record) bool {
	return r.Status == Empty || r.Status == ConfigurationPending || r.Status.TerminationPending()
}

// AcceptConfig is POST /configure (and the API's TLS renewal watcher; from empty, running,
// failed or refresh_configuration_pending, as its caller says): if the status is
// one of from, it runs fn (may be nil; it stores the pending config and sets the tenant
// and timeline, under the lock, so the config is on disk before anyone can see
// configuration_pending) and moves the status to configuration_pending. Another status
// is refused with a WrongStatusError. It returns the status it left.
func (s *Store) AcceptConfig(from []Status, fn func(*Record) error) (Status, Record, error) {
	var was Status
	rec, err := s.update(func(r *Record) error {
		if !slices.Contains(from, r.Status) {
			return &WrongStatusError{Status: r.Status}
		}
		was = r.Status
		return moveRecord(r, ActorAPI, ConfigurationPending, fn)
	})
	return was, rec, err
}

// BeginInit is compute-init's acceptance of a config: empty or configuration_pending ->
// init, with fn (may be nil) recording what the config says.
func (s *Store) BeginInit(fn func(*Record)) (Record, error) {
	return s.move(ActorInit, Init, fields(fn))
}

// BeginReconfiguration is the configure step taking a pending config on a running
// compute: configuration_pending -> configuration.
func (s *Store) BeginReconfiguration() (Record, error) {
	return s.move(ActorConfigure, Configuration, nil)
}

// MarkRunning is the configure step's success: init, configuration or
// refresh_configuration -> running, with fn (may be nil) recording the timings; the error
// is cleared.
func (s *Store) MarkRunning(fn func(*Record)) (Record, error) {
	return s.move(ActorConfigure, Running, func(r *Record) error {
		if fn != nil {
			fn(r)
		}
		r.SetError("")
		return nil
	})
}

// BeginTermination is POST /terminate: empty, running or refresh_configuration_pending ->
// termination_pending_fast (or _immediate). A terminated compute gives ErrAlreadyTerminated with its record; another
// status a WrongStatusError. It returns the status it left.
func (s *Store) BeginTermination(immediate bool) (Status, Record, error) {
	to := TerminationPendingFast
	if immediate {
		to = TerminationPendingImmediate
	}
	var was Status
	rec, err := s.update(func(r *Record) error {
		switch r.Status {
		case Terminated:
			return ErrAlreadyTerminated
		case Empty, Running, RefreshConfigurationPending:
			was = r.Status
			return moveRecord(r, ActorAPI, to, nil)
		}
		return &WrongStatusError{Status: r.Status}
	})
	return was, rec, err
}

// RefreshRefusedError is POST /refresh_configuration in a status that allows no refresh;
// its text is Neon's.
type RefreshRefusedError struct {
	Status Status
}

func (e *RefreshRefusedError) Error() string {
	return "Cannot refresh compute configuration in state " + string(e.Status)
}

// RequestRefresh is POST /refresh_configuration (Neon main's
// signal_refresh_configuration): running or failed -> refresh_configuration_pending;
// refresh_configuration_pending stays (asked again); init is left alone (the start
// applies the newest spec anyway) and is no error. Any other status is refused with a
// RefreshRefusedError. It returns the record after the request.
func (s *Store) RequestRefresh() (Record, error) {
	rec, err := s.update(func(r *Record) error {
		switch r.Status {
		case Running, Failed:
			return moveRecord(r, ActorAPI, RefreshConfigurationPending, nil)
		case RefreshConfigurationPending, Init:
			return errNoop
		}
		return &RefreshRefusedError{Status: r.Status}
	})
	if errors.Is(err, errNoop) {
		return rec, nil
	}
	return rec, err
}

// BeginRefresh is compute-api taking a refresh request to the control plane:
// refresh_configuration_pending -> refresh_configuration.
func (s *Store) BeginRefresh() (Record, error) {
	return s.move(ActorAPI, RefreshConfiguration, nil)
}

// FinishRefresh ends a refresh whose fresh spec names the same pageservers:
// refresh_configuration -> running, the error cleared (on behalf of the API).
func (s *Store) FinishRefresh() (Record, error) {
	return s.move(ActorAPI, Running, func(r *Record) error {
		r.SetError("")
		return nil
	})
}

// RetryRefresh ends a refresh that could not get or apply a new spec, on behalf of a
// (the API, or the configure step): refresh_configuration -> refresh_configuration_pending
// with msg as the error, so that the next request tries again (as Neon main's
// configurator does).
func (s *Store) RetryRefresh(a Actor, msg string) (Record, error) {
	return s.update(func(r *Record) error {
		if r.Status != RefreshConfiguration {
			return &TransitionError{From: r.Status, To: RefreshConfigurationPending}
		}
		return moveRecord(r, a, RefreshConfigurationPending, func(r *Record) error {
			r.SetError(msg)
			return nil
		})
	})
}

// NeedsFinalSync reports whether terminating this compute needs the final safekeeper sync
// (a primary in neon mode): its termination completes with the LSN the sync gives, which
// only the Postgres stop hook knows.
func (r Record) NeedsFinalSync() bool {
	return r.Storage == spec.StorageNeon && r.Mode == spec.ModeTypePrimary
}

// CompleteTermination moves termination_pending_* to terminated with the final LSN, on
// behalf of a (the API or the stop hook). The one condition for who may complete: a
// compute that needs the final sync (NeedsFinalSync) completes only with an LSN (the stop
// hook's); any other completes with lsn nil. Otherwise, or when the status is no longer
// termination_pending_*, the record is left alone. It reports whether it completed.
func (s *Store) CompleteTermination(a Actor, lsn *string) (Record, bool, error) {
	return s.unlessNoop(s.update(func(r *Record) error {
		if !r.Status.TerminationPending() || (lsn == nil && r.NeedsFinalSync()) {
			return errNoop
		}
		return moveRecord(r, a, Terminated, func(r *Record) error {
			r.TerminateLSN = lsn
			return nil
		})
	}))
}

// Fail records msg as the compute's error and moves the status to failed, on behalf of
// actor a. The one guard: the status must be one of during; with no during given, any
// status a may fail from except termination_pending_* (a termination in progress fails
// only when the caller names it, as the final safekeeper sync does). A status outside the
// guard (already failed or terminated, say) is left alone: that is not an error. It
// returns the current record and whether it failed it.
func (s *Store) Fail(a Actor, msg string, during ...Status) (Record, bool, error) {
	if _, known := actorMoves[a]; !known {
		// An actor without a row could never fail anything: say so rather than record
		// nothing in silence.
		return Record{}, false, fmt.Errorf("record failure: unknown actor %q", a)
	}
	if len(during) == 0 {
		during = failableByDefault(a)
		if len(during) == 0 {
			// The monitor, say: its row has no move to failed.
			return Record{}, false, fmt.Errorf("record failure: %s may not fail the compute", a)
		}
	}
	return s.unlessNoop(s.update(func(r *Record) error {
		if !slices.Contains(during, r.Status) {
			return errNoop
		}
		return moveRecord(r, a, Failed, func(r *Record) error {
			r.SetError(msg)
			return nil
		})
	}))
}

// errNoop ends an update whose guard found nothing to do; nothing is written.
var errNoop = errors.New("nothing to do")

// unlessNoop turns the result of an update that may end in errNoop into the record and
// whether the update was written.
func (s *Store) unlessNoop(rec Record, err error) (Record, bool, error) {
	if errors.Is(err, errNoop) {
		return rec, false, nil
	}
	return rec, err == nil, err
}

// failableByDefault lists the statuses a may fail from, termination_pending_* excepted.
func failableByDefault(a Actor) []Status {
	var out []Status
	for _, m := range actorMoves[a] {
		if m.To == Failed && !m.From.TerminationPending() {
			out = append(out, m.From)
		}
	}
	return out
}

func fields(fn func(*Record)) func(*Record) error {
	if fn == nil {
		return nil
	}
	return func(r *Record) error { fn(r); return nil }
}
