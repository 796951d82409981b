package state

import (
	"errors"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
)

// promotionAllowed is the phase move table written out independently of promotionMoves
// (docs/architecture.md, "The state record").
var promotionAllowed = map[PromotionMove]bool{
	{"", promotestate.PhasePromoting}:                          true,
	{promotestate.PhasePromoting, promotestate.PhaseCompleted}: true,
	{promotestate.PhasePromoting, promotestate.PhaseFailed}:    true,
	{promotestate.PhasePromoting, promotestate.PhasePromoting}: true,
	{promotestate.PhaseFailed, promotestate.PhasePromoting}:    true,
}

func TestCanMovePromotionExhaustive(t *testing.T) {
	phases := append([]promotestate.Phase{""}, promotestate.Phases...)
	n := 0
	for _, from := range phases {
		for _, to := range phases {
			want := promotionAllowed[PromotionMove{from, to}]
			if got := CanMovePromotion(from, to); got != want {
				t.Errorf("CanMovePromotion(%q, %q) = %v, want %v", from, to, got, want)
			}
			if want {
				n++
			}
		}
	}
	if len(PromotionMoves()) != n {
		t.Errorf("%d moves in the table, %d expected", len(PromotionMoves()), n)
	}
	if msg := (&PromotionMoveError{To: promotestate.PhaseCompleted}).Error(); msg != "illegal promotion move from none to completed" {
		t.Errorf("PromotionMoveError = %q", msg)
	}
}

// withPromotion writes a record in status st with the promotion phase ph ("" for none).
func withPromotion(t *testing.T, st Status, ph promotestate.Phase) *Store {
	t.Helper()
	s := open(t)
	r := Record{Status: st, StartTime: time.Now().UTC(), Mode: spec.ModeTypeReplica}
	if ph != "" {
		r.Promotion = &promotestate.Promotion{Phase: ph, Error: "earlier"}
	}
	if err := s.write(&r, 0); err != nil {
		t.Fatal(err)
	}
	return s
}

var req = promotestate.Request{Safekeepers: "sk1:5454,sk2:5454", WALFlushLSN: 0x1_0000_0010}

func TestBeginPromotionFromEveryStatusAndPhase(t *testing.T) {
	for _, st := range All {
		for _, ph := range []promotestate.Phase{"", promotestate.PhasePromoting, promotestate.PhaseCompleted, promotestate.PhaseFailed} {
			for _, takeover := range []bool{false, true} {
				s := withPromotion(t, st, ph)
				before, _ := s.Load()
				rec, again, err := s.BeginPromotion(req, takeover)
				var wrong *WrongStatusError
				switch {
				case ph == promotestate.PhaseCompleted:
					if !errors.Is(err, ErrAlreadyPromoted) {
						t.Errorf("%s/%q: err %v, want ErrAlreadyPromoted", st, ph, err)
					}
				case ph == promotestate.PhasePromoting && !takeover:
					if !errors.Is(err, ErrPromotionRunning) {
						t.Errorf("%s/%q: err %v, want ErrPromotionRunning", st, ph, err)
					}
				case st != Running:
					if !errors.As(err, &wrong) || wrong.Status != st {
						t.Errorf("%s/%q takeover=%v: err %v, want a WrongStatusError", st, ph, takeover, err)
					}
				default:
					if err != nil {
						t.Fatalf("%s/%q takeover=%v: %v", st, ph, takeover, err)
					}
					p := rec.Promotion
					if p == nil || p.Phase != promotestate.PhasePromoting || p.Error != "" || p.Request != req || p.StartedAt.IsZero() || p.EndedAt != nil {
						t.Errorf("%s/%q: promotion %+v", st, ph, p)
					}
					if rec.Status != Running {
						t.Errorf("status moved to %s", rec.Status)
					}
					if again != (ph == promotestate.PhasePromoting || ph == promotestate.PhaseFailed) {
						t.Errorf("%s/%q: again %v", st, ph, again)
					}
					continue
				}
				if again {
					t.Errorf("%s/%q: a refused begin says again", st, ph)
				}
				if after, _ := s.Load(); after.Seq != before.Seq {
					t.Errorf("%s/%q takeover=%v: a refused begin wrote the record", st, ph, takeover)
				}
			}
		}
	}
}

func TestEndPromotion(t *testing.T) {
	for _, tc := range []struct {
		name  string
		perr  error
		phase promotestate.Phase
		mode  spec.ModeType
		msg   string
	}{
		{"completed", nil, promotestate.PhaseCompleted, spec.ModeTypePrimary, ""},
		{"failed", errors.New("didn't catch up"), promotestate.PhaseFailed, spec.ModeTypeReplica, "didn't catch up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := withPromotion(t, Running, "")
			rec, _, err := s.BeginPromotion(req, false)
			if err != nil {
				t.Fatal(err)
			}
			// Another lifecycle's outcome is not this one's.
			if _, done, err := s.EndPromotion(rec.StartTime.Add(-time.Second), tc.perr); done || err != nil {
				t.Fatalf("EndPromotion of another lifecycle: %v, %v", done, err)
			}
			end, done, err := s.EndPromotion(rec.StartTime, tc.perr)
			if err != nil || !done {
				t.Fatalf("EndPromotion: %v, %v", done, err)
			}
			p := end.Promotion
			if p.Phase != tc.phase || p.Error != tc.msg || p.EndedAt == nil || p.Request != req {
				t.Errorf("promotion %+v", p)
			}
			if end.Mode != tc.mode {
				t.Errorf("mode %s, want %s", end.Mode, tc.mode)
			}
			if got := p.State(); got.Status != promotestate.Status(tc.phase) || got.Error != tc.msg {
				t.Errorf("State() = %+v", got)
			}
			// Ended already: a second outcome is left alone.
			if _, done, err := s.EndPromotion(rec.StartTime, nil); done || err != nil {
				t.Errorf("second EndPromotion: %v, %v", done, err)
			}
		})
	}
}

func TestEndPromotionInAnyStatus(t *testing.T) {
	// The compute may have moved on (a /terminate, Postgres gone) while the promotion
	// ran: its outcome is still recorded, the status untouched.
	s := withPromotion(t, Running, "")
	rec, _, err := s.BeginPromotion(req, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.BeginTermination(false); err != nil {
		t.Fatal(err)
	}
	end, done, err := s.EndPromotion(rec.StartTime, errors.New("connection lost"))
	if err != nil || !done || end.Status != TerminationPendingFast || end.Promotion.Phase != promotestate.PhaseFailed {
		t.Errorf("EndPromotion: %v %v %s %+v", done, err, end.Status, end.Promotion)
	}
	// A new lifecycle starts without the promotion.
	if _, done, err := s.CompleteTermination(ActorAPI, nil); err != nil || !done {
		t.Fatalf("CompleteTermination: %v %v", done, err)
	}
	r, _, err := s.BeginLifecycle(ActorInit, nil)
	if err != nil || r.Promotion != nil {
		t.Errorf("new lifecycle: %v, promotion %+v", err, r.Promotion)
	}
}

func TestUpdateRefusesPromotionChanges(t *testing.T) {
	s := withPromotion(t, Running, promotestate.PhaseFailed)
	for name, fn := range map[string]func(*Record){
		"clear":    func(r *Record) { r.Promotion = nil },
		"replace":  func(r *Record) { r.Promotion = &promotestate.Promotion{Phase: promotestate.PhaseCompleted} },
		"in place": func(r *Record) { r.Promotion.Phase = promotestate.PhaseCompleted },
	} {
		if _, err := s.Update(func(r *Record) error { fn(r); return nil }); !errors.Is(err, ErrPromotionByUpdate) {
			t.Errorf("%s: err %v, want ErrPromotionByUpdate", name, err)
		}
	}
	if r, _ := s.Load(); r.Promotion == nil || r.Promotion.Phase != promotestate.PhaseFailed {
		t.Errorf("promotion changed: %+v", r.Promotion)
	}
	if _, err := s.Update(func(r *Record) error { r.MigrationID = 3; return nil }); err != nil {
		t.Errorf("other fields: %v", err)
	}
}
