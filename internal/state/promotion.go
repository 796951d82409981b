package state

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
)

// The promotion of a replica (POST /promote) is kept in Record.Promotion and, as the
// status, changes only through the operations below, each checked against one table of
// phase moves (promotionMoves). Only compute-api (ActorAPI) runs promotions, so the
// operations take no actor. docs/architecture.md has the same table for readers.

// noPromotion is the phase of a record without a promotion (Record.Promotion nil).
const noPromotion promotestate.Phase = ""

// PromotionMove is one change of a promotion's phase; From "" is no promotion yet.
type PromotionMove struct{ From, To promotestate.Phase }

// promotionMoves is the one table of legal phase moves:
//   - none -> promoting: the first POST /promote of the lifecycle;
//   - promoting -> completed, failed: the promotion's outcome;
//   - promoting -> promoting: a compute-api that was restarted during a promotion takes
//     it over at the next POST /promote (the process that ran it is gone);
//   - failed -> promoting: a POST /promote after a failure tries again (compute_ctl
//     answers the old failure for good, until the compute restarts);
//   - completed: final; a later POST /promote answers completed, as compute_ctl.
var promotionMoves = []PromotionMove{
	{noPromotion, promotestate.PhasePromoting},
	{promotestate.PhasePromoting, promotestate.PhaseCompleted},
	{promotestate.PhasePromoting, promotestate.PhaseFailed},
	{promotestate.PhasePromoting, promotestate.PhasePromoting},
	{promotestate.PhaseFailed, promotestate.PhasePromoting},
}

// CanMovePromotion reports whether a promotion may move from -> to ("" is none).
func CanMovePromotion(from, to promotestate.Phase) bool {
	return slices.Contains(promotionMoves, PromotionMove{from, to})
}

// PromotionMoves lists the table (a copy).
func PromotionMoves() []PromotionMove { return slices.Clone(promotionMoves) }

func phaseOf(r *Record) promotestate.Phase {
	if r.Promotion == nil {
		return noPromotion
	}
	return r.Promotion.Phase
}

// ErrAlreadyPromoted is returned by BeginPromotion when this lifecycle's promotion
// completed, with the record.
var ErrAlreadyPromoted = errors.New("already promoted")

// ErrPromotionRunning is returned by BeginPromotion when a promotion runs and the caller
// does not take it over.
var ErrPromotionRunning = errors.New("a promotion is running")

// PromotionMoveError is a phase move outside promotionMoves.
type PromotionMoveError struct{ From, To promotestate.Phase }

func (e *PromotionMoveError) Error() string {
	from := string(e.From)
	if from == "" {
		from = "none"
	}
	return fmt.Sprintf("illegal promotion move from %s to %s", from, e.To)
}

func movePromotion(r *Record, to promotestate.Phase, fn func(p *promotestate.Promotion)) error {
	from := phaseOf(r)
	if !CanMovePromotion(from, to) {
		return &PromotionMoveError{From: from, To: to}
	}
	var p promotestate.Promotion
	if r.Promotion != nil {
		p = *r.Promotion
	}
	p.Phase = to
	fn(&p)
	r.Promotion = &p
	return nil
}

// BeginPromotion is POST /promote starting a promotion (none or failed -> promoting), or
// taking over one left promoting by an earlier compute-api process (takeover set: the
// caller knows that no promotion runs in its process). The compute must be running
// (another status: a WrongStatusError). A completed promotion gives ErrAlreadyPromoted, a
// running one (without takeover) ErrPromotionRunning, both with the record. again says
// that an earlier attempt of this lifecycle exists (one left promoting, or one that
// failed): it may have got as far as promoting Postgres.
func (s *Store) BeginPromotion(req promotestate.Request, takeover bool) (rec Record, again bool, err error) {
	now := s.now().UTC()
	rec, err = s.update(func(r *Record) error {
		again = false
		switch phaseOf(r) {
		case promotestate.PhaseCompleted:
			return ErrAlreadyPromoted
		case promotestate.PhasePromoting:
			if !takeover {
				return ErrPromotionRunning
			}
			again = true
		case promotestate.PhaseFailed:
			again = true
		}
		if r.Status != Running {
			return &WrongStatusError{Status: r.Status}
		}
		return movePromotion(r, promotestate.PhasePromoting, func(p *promotestate.Promotion) {
			*p = promotestate.Promotion{Phase: promotestate.PhasePromoting, Request: req, StartedAt: now}
		})
	})
	if err != nil {
		again = false
	}
	return rec, again, err
}

// EndPromotion records the outcome of the promotion that began in the lifecycle started
// at lifecycle (Record.StartTime): promoting -> completed, with the compute's mode now
// primary, when perr is nil; promoting -> failed with perr's text otherwise. A record of
// another lifecycle, or without a promotion running, is left alone (reported false): the
// outcome of a promotion cut short by a new lifecycle is not this one's.
func (s *Store) EndPromotion(lifecycle time.Time, perr error) (Record, bool, error) {
	now := s.now().UTC()
	return s.unlessNoop(s.update(func(r *Record) error {
		if !r.StartTime.Equal(lifecycle) || phaseOf(r) != promotestate.PhasePromoting {
			return errNoop
		}
		if perr != nil {
			return movePromotion(r, promotestate.PhaseFailed, func(p *promotestate.Promotion) {
				p.Error = perr.Error()
				p.EndedAt = &now
			})
		}
		r.Mode = spec.ModeTypePrimary
		return movePromotion(r, promotestate.PhaseCompleted, func(p *promotestate.Promotion) {
			p.Error = ""
			p.EndedAt = &now
		})
	}))
}
