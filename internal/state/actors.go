package state

import "fmt"

// Actor is a writer of the state record: one of the units, or a part of one.
type Actor string

// The actors. Each lifecycle operation is made on behalf of one of them, and a move that
// is not in its row of actorMoves is refused.
const (
	// ActorAPI is compute-api: POST /configure, POST /terminate and the TLS renewal
	// watcher.
	ActorAPI Actor = "api"
	// ActorInit is compute-init's prepare step (compute-init.service).
	ActorInit Actor = "compute-init"
	// ActorConfigure is compute-init's configure step (compute-configure.service).
	ActorConfigure Actor = "configure"
	// ActorStopHook is the ExecStopPost= hook of compute-postgres.service
	// (`compute-init postgres-stopped`).
	ActorStopHook Actor = "stop-hook"
	// ActorMonitor is compute-monitor: it writes last_active and the downtime figures
	// (Store.Update, only into the running record of the lifecycle it monitors) but moves
	// no status.
	ActorMonitor Actor = "monitor"
)

// Actors lists every actor.
var Actors = []Actor{ActorAPI, ActorInit, ActorConfigure, ActorStopHook, ActorMonitor}

// Move is one status change.
type Move struct{ From, To Status }

func (m Move) String() string { return string(m.From) + " -> " + string(m.To) }

// actorMoves says which actor may make which move; every move is also in the transition
// table (transitions). docs/architecture.md has the same table for readers.
var actorMoves = map[Actor][]Move{
	ActorAPI: {
		// POST /configure (and the TLS watcher, from running only).
		{Empty, ConfigurationPending}, {Running, ConfigurationPending}, {Failed, ConfigurationPending},
		// POST /terminate.
		{Empty, TerminationPendingFast}, {Empty, TerminationPendingImmediate},
		{Running, TerminationPendingFast}, {Running, TerminationPendingImmediate},
		// A terminated compute-init wait, or a stopped Postgres that needs no final sync.
		{TerminationPendingFast, Terminated}, {TerminationPendingImmediate, Terminated},
		// A unit that could not be started or stopped.
		{ConfigurationPending, Failed}, {Configuration, Failed},
		{TerminationPendingFast, Failed}, {TerminationPendingImmediate, Failed},
		// POST /refresh_configuration (Postgres asks when the pageserver stops answering):
		// the request, the fetch of a fresh spec from the control plane and its outcome
		// (unchanged: running; no spec or fetch failed: pending again; no longer attached:
		// failed; changed: the configure step applies it), a termination during a refresh
		// that keeps failing.
		{Running, RefreshConfigurationPending}, {Failed, RefreshConfigurationPending},
		{RefreshConfigurationPending, RefreshConfiguration}, {RefreshConfiguration, Running},
		{RefreshConfiguration, RefreshConfigurationPending}, {RefreshConfiguration, Failed},
		{RefreshConfigurationPending, TerminationPendingFast}, {RefreshConfigurationPending, TerminationPendingImmediate},
		{RefreshConfigurationPending, Failed},
		// A pushed /configure takes over from a pending refresh.
		{RefreshConfigurationPending, ConfigurationPending},
	},
	ActorInit: {
		{Empty, Init}, {ConfigurationPending, Init},
		{Empty, Failed}, {ConfigurationPending, Failed}, {Init, Failed},
	},
	ActorConfigure: {
		{Init, Running}, {ConfigurationPending, Configuration}, {Configuration, Running},
		{Empty, Failed}, {ConfigurationPending, Failed}, {Init, Failed}, {Configuration, Failed},
		// A refreshed spec applied (running) or not (pending again, to be asked again).
		{RefreshConfiguration, Running}, {RefreshConfiguration, RefreshConfigurationPending}, {RefreshConfiguration, Failed},
	},
	ActorStopHook: {
		{TerminationPendingFast, Terminated}, {TerminationPendingImmediate, Terminated},
		{TerminationPendingFast, Failed}, {TerminationPendingImmediate, Failed},
		// Postgres ended outside /terminate, or never started.
		{ConfigurationPending, Failed}, {Init, Failed}, {Running, Failed}, {Configuration, Failed},
		{RefreshConfigurationPending, Failed}, {RefreshConfiguration, Failed},
	},
	ActorMonitor: {},
}

// lifecycleStarters may begin a new lifecycle (any status -> a fresh empty record).
var lifecycleStarters = map[Actor]bool{ActorInit: true}

// CanMove reports whether actor a may move the status from -> to: the move must be a
// transition of the table (staying put is not a move) and in a's row.
func CanMove(a Actor, from, to Status) bool {
	if from == to || !CanTransition(from, to) {
		return false
	}
	for _, m := range actorMoves[a] {
		if m.From == from && m.To == to {
			return true
		}
	}
	return false
}

// MayBeginLifecycle reports whether actor a may start a new lifecycle (reset the record).
func MayBeginLifecycle(a Actor) bool { return lifecycleStarters[a] }

// MovesOf lists actor a's moves (a copy).
func MovesOf(a Actor) []Move { return append([]Move(nil), actorMoves[a]...) }

// ActorError is returned when an actor attempts a move that is in the transition table
// but not in its row.
type ActorError struct {
	Actor    Actor
	From, To Status
}

func (e *ActorError) Error() string {
	if e.Actor == "" {
		e := *e
		e.Actor = "an unnamed actor"
		return e.Error()
	}
	if e.From == "" && e.To == Empty {
		return fmt.Sprintf("%s may not begin a lifecycle", e.Actor)
	}
	return fmt.Sprintf("%s may not move the status from %s to %s", e.Actor, e.From, e.To)
}
