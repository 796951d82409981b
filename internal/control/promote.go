package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/logx"
	"github.com/computetools/compute-tools/internal/promote"
	"github.com/computetools/compute-tools/internal/promote/promotestate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Promoter is the Postgres side of a promotion (*promote.Postgres).
type Promoter interface {
	// Promote waits for the replay of req.WALFlushLSN, sets the safekeepers (neon mode)
	// and promotes (see promote.Run).
	Promote(ctx context.Context, req promotestate.Request, run promote.Run) (promote.Result, error)
	// ResetSafekeepers drops the ALTER SYSTEM setting Promote made, once
	// postgresql.conf carries the safekeepers.
	ResetSafekeepers(ctx context.Context) error
}

// PromotionStore is the part of the state store a promotion uses (*state.Store).
type PromotionStore interface {
	BeginPromotion(req promotestate.Request, takeover bool) (state.Record, bool, error)
	EndPromotion(lifecycle time.Time, perr error) (state.Record, bool, error)
}

// promotion is the promotion that runs in this process; every POST /promote that comes
// while it runs waits for its outcome.
type promotion struct {
	done chan struct{}
	// state is the outcome, set before done is closed.
	state promotestate.State
}

// promotions holds this process's running promotion (at most one).
type promotions struct {
	mu  sync.Mutex
	cur *promotion
}

// Promote is POST /promote (compute_ctl's ComputeNode::promote): it promotes this replica
// to a primary and returns the outcome, completed or failed (the answer's 200 and 500).
// The first call starts the promotion, which is not bound to the call (a client that goes
// away does not stop it) but is one of the server's tasks (Deps.Tasks: shutdown cancels
// it and waits for it); every call that comes while it runs, this one's retry
// included, waits for the same outcome (its own request is not looked at). A call after
// a completed promotion answers completed again, as compute_ctl. Unlike compute_ctl, a
// call after a failed one starts a new promotion (compute_ctl answers the old failure
// until the compute restarts), and a compute that is not running is refused (a
// state.WrongStatusError; compute_ctl does not look, and fails or answers later). A
// caller that goes away before the outcome gets ctx's error.
func (c *Controller) Promote(ctx context.Context, req promotestate.Request) (promotestate.State, error) {
	if err := c.waitReconciled(ctx); err != nil {
		return promotestate.State{}, err
	}
	c.promos.mu.Lock()
	p := c.promos.cur
	if p == nil {
		// Nothing runs here: a promotion the record shows running was begun by an
		// earlier compute-api process, which is gone; this one takes it over.
		rec, again, err := c.promotionStore().BeginPromotion(req, true)
		switch {
		case errors.Is(err, state.ErrAlreadyPromoted):
			c.promos.mu.Unlock()
			return promotestate.State{Status: promotestate.Completed}, nil
		case err != nil:
			c.promos.mu.Unlock()
			return promotestate.State{}, stateError(err)
		}
		p = &promotion{done: make(chan struct{})}
		c.promos.cur = p
		log := c.logger(ctx)
		log.Info("promotion begins", "wal_flush_lsn", req.WALFlushLSN.String(), "safekeepers", req.Safekeepers, "again", again)
		// Not bound to this request (a client that goes away does not stop it), but to
		// the server: one of its tasks, which shutdown cancels and waits for; it logs
		// with this request's logger.
		c.cfg.Tasks.Go(func(tctx context.Context) {
			c.runPromotion(WithLogger(tctx, log), p, rec, req, again)
		})
	}
	c.promos.mu.Unlock()
	select {
	case <-p.done:
		return p.state, nil
	case <-ctx.Done():
		return promotestate.State{}, ctx.Err()
	}
}

func (c *Controller) promotionStore() PromotionStore {
	if s, ok := c.cfg.Store.(PromotionStore); ok {
		return s
	}
	return noPromotions{}
}

// noPromotions is the PromotionStore of a store that cannot keep promotions.
type noPromotions struct{}

var errNoPromotions = errors.New("the state store keeps no promotions")

func (noPromotions) BeginPromotion(promotestate.Request, bool) (state.Record, bool, error) {
	return state.Record{}, false, errNoPromotions
}

func (noPromotions) EndPromotion(time.Time, error) (state.Record, bool, error) {
	return state.Record{}, false, errNoPromotions
}

// runPromotion carries out the promotion begun in rec, records its outcome and hands it
// to the waiting calls.
func (c *Controller) runPromotion(ctx context.Context, p *promotion, rec state.Record, req promotestate.Request, again bool) {
	log := c.logger(ctx)
	start := c.cfg.Now()
	perr := c.promote(ctx, rec, req, again)
	if perr != nil && ctx.Err() != nil {
		// Shutdown cut it short: the next POST /promote (of this compute-api's
		// successor) resumes it, a Postgres already promoted counting as promoted.
		perr = fmt.Errorf("compute-api stopped during the promotion (POST /promote again resumes it): %w", perr)
	}
	_, _, serr := c.promotionStore().EndPromotion(rec.StartTime, perr)
	switch {
	case perr != nil:
		log.Error("promotion failed", "err", perr, "promote_ms", c.cfg.Now().Sub(start).Milliseconds())
		p.state = promotestate.State{Status: promotestate.Failed, Error: perr.Error()}
	case serr != nil:
		// Promoted, but the record still says replica: say so rather than claim a
		// success the state record does not show.
		log.Error("promoted, but the outcome could not be recorded", "err", serr)
		p.state = promotestate.State{Status: promotestate.Failed, Error: "promoted, but the outcome could not be recorded: " + serr.Error()}
	default:
		logx.Milestone(log, logx.MsgPromoted, "promoted to primary", "promote_ms", c.cfg.Now().Sub(start).Milliseconds())
		p.state = promotestate.State{Status: promotestate.Completed}
	}
	if perr != nil && serr != nil {
		log.Error("could not record the failed promotion", "err", serr)
	}
	c.promos.mu.Lock()
	c.promos.cur = nil
	close(p.done)
	c.promos.mu.Unlock()
}

// promote is the promotion itself: the checks of compute_ctl, the promoted config built
// and validated (before Postgres is touched: a promotion cannot be undone), Postgres
// promoted, and the config rewritten as a primary's through the configure step.
func (c *Controller) promote(ctx context.Context, rec state.Record, req promotestate.Request, again bool) error {
	log := c.logger(ctx)
	if rec.Mode != spec.ModeTypeReplica {
		return fmt.Errorf("%s is not replica", rec.Mode)
	}
	if rec.Storage == spec.StorageNeon {
		prewarm := lfcstate.PrewarmNotPrewarmed
		if rec.LFC != nil {
			prewarm = rec.LFC.Prewarm.Status
		}
		switch prewarm {
		case lfcstate.PrewarmNotPrewarmed, lfcstate.PrewarmPrewarming:
			return errors.New("prewarm not requested or pending")
		case lfcstate.PrewarmFailed:
			log.Warn("replica prewarm failed", "err", rec.LFC.Prewarm.Error)
		}
	} else {
		log.Info("standalone mode: no LFC, the prewarm is not required")
	}
	if c.cfg.ReadAppliedConfig == nil || c.cfg.Promoter == nil {
		return errors.New("promotion not configured in this compute-api")
	}
	applied, err := c.cfg.ReadAppliedConfig()
	if err != nil {
		return fmt.Errorf("read the applied config: %w", err)
	}
	raw, err := PromotedConfig(applied, req.Safekeepers)
	if err != nil {
		return err
	}
	loaded, err := spec.Load(raw)
	if err != nil {
		return fmt.Errorf("the config as a primary: %w", err)
	}

	neon := rec.Storage == spec.StorageNeon
	res, err := c.cfg.Promoter.Promote(ctx, req, promote.Run{Resume: again, Neon: neon})
	if err != nil {
		return err
	}
	log.Info("postgres promoted", "lsn_wait_ms", res.LSNWaitMs, "pg_promote_ms", res.PromoteMs,
		"replayed", res.Replayed.String(), "already_promoted", res.AlreadyPromoted)

	start := c.cfg.Now()
	if err := c.rewriteAsPrimary(ctx, raw, loaded.Spec); err != nil {
		return fmt.Errorf("rewriting the config as a primary: %w", err)
	}
	if neon {
		if err := c.cfg.Promoter.ResetSafekeepers(ctx); err != nil {
			return err
		}
	}
	log.Info("config rewritten as a primary", "reconfigure_ms", c.cfg.Now().Sub(start).Milliseconds())
	return nil
}

// rewriteAsPrimary runs the configure step with the promoted config, as POST /configure
// does for a running compute: postgresql.conf is regenerated (package pgdata, by the
// configure step, which owns PGDATA), Postgres reloaded, the spec applied as a primary's,
// and the config becomes the applied one.
func (c *Controller) rewriteAsPrimary(ctx context.Context, raw []byte, parsed *spec.Parsed) error {
	wake, cancel := c.subscribe()
	defer cancel()
	if _, _, err := c.submitConfig(raw, parsed, nil, state.Running); err != nil {
		return err
	}
	// The unit job is not cancelled at shutdown (the configure step goes on and
	// records its own outcome, as for the TLS watcher); only the wait for it ends.
	if msg := c.reconfigureUnless(context.WithoutCancel(ctx), ctx.Done()); msg != "" {
		return errors.New(msg)
	}
	rec, err := c.wait(ctx, wake, state.Running, state.Failed)
	if err != nil {
		return err
	}
	if rec.Status == state.Failed {
		return errors.New(errorText(rec))
	}
	return nil
}

// PromotedConfig is the applied config raw with its spec made a primary's: mode Primary,
// and the safekeepers of the promotion as safekeeper_connstrings (a leading
// "g#<generation>:" as safekeepers_generation), so that the neon.safekeepers line
// postgresql.conf gets is the value the promotion set, as compute_ctl set it. Every other
// field is kept.
func PromotedConfig(raw []byte, safekeepers string) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("the applied config: %w", err)
	}
	var sp map[string]json.RawMessage
	if err := json.Unmarshal(top["spec"], &sp); err != nil || sp == nil {
		return nil, errors.New("the applied config has no spec")
	}
	gen, list, err := splitSafekeepers(safekeepers)
	if err != nil {
		return nil, err
	}
	sp["mode"] = json.RawMessage(`"Primary"`)
	delete(sp, "safekeeper_connstrings")
	delete(sp, "safekeepers_generation")
	if len(list) > 0 {
		b, _ := json.Marshal(list)
		sp["safekeeper_connstrings"] = b
	}
	if gen != nil {
		sp["safekeepers_generation"] = json.RawMessage(strconv.FormatUint(uint64(*gen), 10))
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	top["spec"] = b
	return json.Marshal(top)
}

// splitSafekeepers reads Neon's neon.safekeepers value: an optional "g#<generation>:"
// and a comma-separated list (kept as it is, empty entries included: the spec's
// validation refuses those in neon mode).
func splitSafekeepers(v string) (*uint32, []string, error) {
	var gen *uint32
	if rest, ok := strings.CutPrefix(v, "g#"); ok {
		n, list, ok := strings.Cut(rest, ":")
		g, err := strconv.ParseUint(n, 10, 32)
		if !ok || err != nil {
			return nil, nil, fmt.Errorf("invalid safekeepers %q: want g#<generation>:<list>", v)
		}
		g32 := uint32(g)
		gen, v = &g32, list
	}
	if v == "" {
		return gen, nil, nil
	}
	return gen, strings.Split(v, ","), nil
}
