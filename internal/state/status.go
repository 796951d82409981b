// Package state owns the compute's one state record: the status enum with Neon's exact
// JSON spellings, the single table of legal transitions, the table of which actor (unit)
// may make which move (actors.go), the lifecycle operations that are the only way the
// status changes (lifecycle.go), and the store that keeps the record in
// <state-dir>/state.json under a lock with atomic writes.
package state

import (
	"fmt"
	"strings"
)

// Status is the compute status. Its JSON form is always a flat snake_case string.
type Status string

// The statuses of Neon's ComputeStatus, spelled as on the wire.
const (
	Empty                       Status = "empty"
	ConfigurationPending        Status = "configuration_pending"
	Init                        Status = "init"
	Running                     Status = "running"
	Configuration               Status = "configuration"
	Failed                      Status = "failed"
	TerminationPendingFast      Status = "termination_pending_fast"
	TerminationPendingImmediate Status = "termination_pending_immediate"
	Terminated                  Status = "terminated"
	// RefreshConfigurationPending and RefreshConfiguration are Neon main's (after the
	// reference commit): POST /refresh_configuration asked the configure step to fetch
	// a fresh spec from the control plane (the pageserver may have moved), and it does.
	RefreshConfigurationPending Status = "refresh_configuration_pending"
	RefreshConfiguration        Status = "refresh_configuration"
)

// All lists every status in declaration order.
var All = []Status{Empty, ConfigurationPending, Init, Running, Configuration, Failed,
	TerminationPendingFast, TerminationPendingImmediate, Terminated,
	RefreshConfigurationPending, RefreshConfiguration}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, k := range All {
		if s == k {
			return true
		}
	}
	return false
}

// Display is the hyphenated form Neon uses in 412 messages and metric labels.
func (s Status) Display() string { return strings.ReplaceAll(string(s), "_", "-") }

// Serving reports whether Postgres serves in status s after the start: running, or
// running while a new spec is on its way (configuration_pending, configuration,
// refresh_configuration_pending, refresh_configuration).
func (s Status) Serving() bool {
	switch s {
	case Running, ConfigurationPending, Configuration, RefreshConfigurationPending, RefreshConfiguration:
		return true
	}
	return false
}

// TerminationPending reports whether s is one of the termination_pending_* statuses.
func (s Status) TerminationPending() bool {
	return s == TerminationPendingFast || s == TerminationPendingImmediate
}

// transitions is the one table of legal status changes. It follows the state diagram of
// compute_ctl's README (compute_tools/README.md) and its ComputeStatus moves
// (libs/compute_api/src/responses.rs, compute_tools/src/compute.rs), with the fixes
// recorded in docs/architecture.md:
//   - empty -> termination_pending_* is followed by terminated (Neon hangs there);
//   - empty -> failed when the config file is unusable (Neon exits the process);
//   - running -> failed when Postgres dies on its own (Neon exits the process);
//   - termination_pending_* -> failed when the final safekeeper sync fails (Neon exits
//     without ever reporting terminated);
//   - failed -> configuration_pending: a new POST /configure while Postgres still runs
//     recovers a failed (re)configuration (Neon's compute stays failed for good);
//   - refresh_configuration_pending -> termination_pending_*: a compute whose refresh
//     keeps failing can still be terminated (Neon answers 412 there);
//   - refresh_configuration_pending -> configuration_pending: a pushed /configure takes
//     over from a refresh that keeps failing (Neon answers 412 there);
//   - refresh_configuration(_pending) -> failed when Postgres dies meanwhile, or the
//     control plane says the compute is no longer attached (Neon exits the process).
var transitions = map[Status][]Status{
	Empty:                       {ConfigurationPending, Init, TerminationPendingFast, TerminationPendingImmediate, Failed},
	ConfigurationPending:        {Init, Configuration, Failed},
	Init:                        {Running, Failed},
	Running:                     {ConfigurationPending, TerminationPendingFast, TerminationPendingImmediate, Failed, RefreshConfigurationPending},
	Configuration:               {Running, Failed},
	Failed:                      {ConfigurationPending, RefreshConfigurationPending},
	TerminationPendingFast:      {Terminated, Failed},
	TerminationPendingImmediate: {Terminated, Failed},
	Terminated:                  {},
	RefreshConfigurationPending: {RefreshConfiguration, TerminationPendingFast, TerminationPendingImmediate, Failed, ConfigurationPending},
	RefreshConfiguration:        {Running, RefreshConfigurationPending, Failed},
}

// CanTransition reports whether from -> to is legal. Staying in the same status is not a
// transition and is always allowed (used for updates of other fields).
func CanTransition(from, to Status) bool {
	if from == to {
		return from.Valid()
	}
	for _, t := range transitions[from] {
		if t == to {
			return true
		}
	}
	return false
}

// TransitionError is returned for an illegal status change; it names both states.
type TransitionError struct {
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("illegal status transition from %s to %s", e.From, e.To)
}

// WrongStatusError is returned when an operation needs another status. Its text is the
// one Neon's API sends with 412.
type WrongStatusError struct {
	Status Status
}

func (e *WrongStatusError) Error() string {
	return "invalid compute status: " + e.Status.Display()
}
