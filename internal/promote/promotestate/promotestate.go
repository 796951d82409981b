// Package promotestate is the vocabulary of POST /promote (replica -> primary): the
// request Neon's compute API takes (SafekeepersLsn: the safekeepers and the WAL flush LSN
// of the old primary), decoded from the JSON body Neon's OpenAPI documents or from the
// form body compute_ctl's code reads; the answer (PromoteState, tagged by `status`); and
// the promotion as the state record keeps it (Promotion, with its phases). compute-api
// serves these, a Go client imports them. It depends only on the standard library and
// internal/spec (for the LSN), so the state record can hold it.
package promotestate

import (
	"time"

	"github.com/computetools/compute-tools/internal/spec"
)

// Status is the `status` of Neon's PromoteState.
type Status string

// The statuses of Neon's PromoteState (libs/compute_api/src/responses.rs).
const (
	// NotPromoted: no promotion has run in this lifecycle, or one runs (compute_ctl's
	// watch channel holds not_promoted until the promotion ends). POST /promote never
	// answers it: it waits for the outcome.
	NotPromoted Status = "not_promoted"
	Completed   Status = "completed"
	Failed      Status = "failed"
)

// Statuses lists every status, in the order of Neon's OpenAPI enum.
var Statuses = []Status{NotPromoted, Completed, Failed}

// State is Neon's PromoteState: {"status":"completed"}, {"status":"failed","error":...}
// or {"status":"not_promoted"}.
type State struct {
	Status Status `json:"status"`
	// Error is set with Failed only.
	Error string `json:"error,omitempty"`
}

// Request is Neon's SafekeepersLsn, the body of POST /promote.
type Request struct {
	// Safekeepers is the old primary's safekeepers, a comma-separated list of host:port
	// (Neon's neon.safekeepers value; a leading "g#<generation>:" is kept as it is).
	Safekeepers string `json:"safekeepers"`
	// WALFlushLSN is the old primary's last WAL flush LSN ("HI/LO"): the replica must
	// have replayed up to it before it is promoted.
	WALFlushLSN spec.Lsn `json:"wal_flush_lsn"`
}

// Phase is where a promotion is, as the state record keeps it.
type Phase string

// The phases of a promotion. A compute with no promotion has none (nil in the record).
const (
	// PhasePromoting: a promotion runs (compute-api runs it).
	PhasePromoting Phase = "promoting"
	// PhaseCompleted: the compute is a primary now; a later POST /promote answers
	// completed again (as compute_ctl).
	PhaseCompleted Phase = "completed"
	// PhaseFailed: the promotion failed (Error says why); a later POST /promote tries
	// again.
	PhaseFailed Phase = "failed"
)

// Phases lists every phase.
var Phases = []Phase{PhasePromoting, PhaseCompleted, PhaseFailed}

// Promotion is the promotion of this lifecycle as the state record keeps it.
type Promotion struct {
	Phase Phase `json:"phase"`
	// Error says why a failed promotion failed.
	Error string `json:"error,omitempty"`
	// Request is what the promotion was asked to do.
	Request Request `json:"request"`
	// StartedAt and EndedAt bound the promotion (EndedAt nil while it runs).
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// State is the PromoteState a promotion shows: not_promoted for none or one that runs,
// completed, or failed with its error.
func (p *Promotion) State() State {
	if p == nil {
		return State{Status: NotPromoted}
	}
	switch p.Phase {
	case PhaseCompleted:
		return State{Status: Completed}
	case PhaseFailed:
		return State{Status: Failed, Error: p.Error}
	}
	return State{Status: NotPromoted}
}
