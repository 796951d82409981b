package lfc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
)

// Store is the endpoint storage Core needs (Client implements it).
type Store interface {
	// Get returns the compressed state of endpointID ("" = this compute's), or
	// ErrNotFound.
	Get(ctx context.Context, endpointID string) ([]byte, error)
	// Put stores this compute's compressed state.
	Put(ctx context.Context, body []byte) error
}

// Postgres is the Postgres side Core needs (PG implements it).
type Postgres interface {
	// LocalCacheState returns the LFC state, nil when it is empty.
	LocalCacheState(ctx context.Context) ([]byte, error)
	// PrewarmLocalCache loads a state into the LFC; cancelling ctx cancels the query.
	PrewarmLocalCache(ctx context.Context, state []byte) error
	// PrewarmInfo returns the prewarm progress.
	PrewarmInfo(ctx context.Context) (lfcstate.Progress, error)
}

// CoreOptions configures NewCore.
type CoreOptions struct {
	// MaxStateBytes bounds a decompressed state; DefaultMaxBytes if zero.
	MaxStateBytes int64
	// Logger: slog.Default() if nil.
	Logger *slog.Logger
}

// Core runs prewarms and offloads: it asks the Machine, does the I/O (endpoint storage,
// zstd, Postgres) timed on the Machine's clock, and reports the outcome to the Machine.
type Core struct {
	m        *Machine
	store    Store
	pg       Postgres
	maxState int64
	log      *slog.Logger
}

// NewCore returns a Core over m, store and pg.
func NewCore(m *Machine, store Store, pg Postgres, o CoreOptions) *Core {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxStateBytes <= 0 {
		o.MaxStateBytes = DefaultMaxBytes
	}
	return &Core{m: m, store: store, pg: pg, maxState: o.MaxStateBytes, log: o.Logger}
}

// Machine returns the state machine.
func (c *Core) Machine() *Machine { return c.m }

// StartPrewarm takes a prewarm from fromEndpoint's state ("" = this compute's) and
// returns the function that runs it to its end and records the outcome; the caller runs
// it, normally in a goroutine, so that the request is answered at once. It returns
// ErrPrewarmRunning while one runs. ctx bounds the run (CancelPrewarm cancels it too): pass
// the process's context, not an HTTP request's, which ends with the answer.
//
// run must be called exactly once: until it returns the machine stays prewarming (no
// other prewarm, no offload), so a run that is never called wedges it. A panic inside run
// records the prewarm failed ("panic: ...") and is then re-raised.
func (c *Core) StartPrewarm(ctx context.Context, fromEndpoint string) (run func(), err error) {
	r, err := c.m.StartPrewarm(ctx)
	if err != nil {
		return nil, err
	}
	return func() {
		defer func() {
			if p := recover(); p != nil {
				c.m.FinishPrewarm(r, lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: fmt.Sprintf("panic: %v", p)})
				c.log.Error("LFC prewarm panicked", "panic", fmt.Sprint(p))
				panic(p)
			}
		}()
		res := c.prewarm(r.Context(), fromEndpoint)
		c.m.FinishPrewarm(r, res)
		st := c.m.Prewarm()
		switch st.Status {
		case lfcstate.PrewarmFailed:
			c.log.Error("LFC prewarm failed", "err", st.Error)
		case lfcstate.PrewarmCompleted:
			c.log.Info("LFC prewarm completed", "total", st.Progress.Total, "prewarmed", st.Progress.Prewarmed,
				"skipped", st.Progress.Skipped, "state_download_ms", st.Timings.StateDownloadMs,
				"uncompress_ms", st.Timings.UncompressMs, "prewarm_ms", st.Timings.PrewarmMs)
		default:
			c.log.Info("LFC prewarm ended", "status", string(st.Status))
		}
	}, nil
}

// CancelPrewarm cancels a running prewarm (its Postgres query too) and reports whether
// one was running.
func (c *Core) CancelPrewarm() bool { return c.m.CancelPrewarm() }

func (c *Core) prewarm(ctx context.Context, from string) lfcstate.PrewarmState {
	now := c.m.now
	fail := func(err error) lfcstate.PrewarmState {
		return lfcstate.PrewarmState{Status: lfcstate.PrewarmFailed, Error: err.Error()}
	}

	t0 := now()
	body, err := c.store.Get(ctx, from)
	if errors.Is(err, ErrNotFound) {
		c.log.Info("no LFC state in endpoint storage, prewarm skipped", "from_endpoint", from)
		return lfcstate.PrewarmState{Status: lfcstate.PrewarmSkipped}
	}
	if err != nil {
		return fail(err)
	}
	t1 := now()
	state, err := decompress(body, c.maxState)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	t2 := now()
	c.log.Info("downloaded LFC state, loading into postgres", "compressed_bytes", len(body), "bytes", len(state))
	if err := c.pg.PrewarmLocalCache(ctx, state); err != nil {
		return fail(err)
	}
	t3 := now()
	// The query completed: the prewarm did, whatever happens to ctx now. The final count
	// is read on a context that a cancel arriving now does not end (else the completed
	// prewarm would end cancelled), bounded by InfoTimeout.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), InfoTimeout)
	defer cancel()
	info, err := c.pg.PrewarmInfo(ictx)
	if err != nil {
		return fail(err)
	}
	return lfcstate.PrewarmState{
		Status:   lfcstate.PrewarmCompleted,
		Progress: info,
		Timings:  lfcstate.PrewarmTimings{StateDownloadMs: ms(t1.Sub(t0)), UncompressMs: ms(t2.Sub(t1)), PrewarmMs: ms(t3.Sub(t2))},
	}
}

// InfoTimeout bounds a query of the prewarm progress (neon.get_prewarm_info()).
const InfoTimeout = 5 * time.Second

// StartOffload takes a manual offload (POST /lfc/offload) and returns the function that
// runs it; see Machine.StartOffload for the refusals. ctx is as for StartPrewarm, and run
// must be called exactly once, as StartPrewarm's (a panic inside it records the offload
// failed and is re-raised).
//
// A prewarm taken while the offload runs (POST /lfc/prewarm does not wait for it) makes
// the offload end failed with ErrPrewarmDuringOffload, without uploading: Core checks
// after reading the LFC state and again right before the upload.
func (c *Core) StartOffload(ctx context.Context) (run func(), err error) {
	r, err := c.m.StartOffload()
	if err != nil {
		return nil, err
	}
	return func() { c.runOffload(ctx, r) }, nil
}

// StartPeriodicOffload is the periodic tick: the function that runs the offload, or nil
// and why none starts (see Machine.StartPeriodicOffload).
func (c *Core) StartPeriodicOffload(ctx context.Context) (run func(), why string) {
	r, why := c.m.StartPeriodicOffload()
	if r == nil {
		return nil, why
	}
	return func() { c.runOffload(ctx, r) }, ""
}

func (c *Core) runOffload(ctx context.Context, r *OffloadRun) {
	defer func() {
		if p := recover(); p != nil {
			c.m.FinishOffload(r, lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: fmt.Sprintf("panic: %v", p)})
			c.log.Error("LFC offload panicked", "panic", fmt.Sprint(p), "periodic", r.Periodic)
			panic(p)
		}
	}()
	res := c.offload(ctx, r)
	c.m.FinishOffload(r, res)
	switch res.Status {
	case lfcstate.OffloadFailed:
		c.log.Error("LFC offload failed", "err", res.Error, "periodic", r.Periodic)
	case lfcstate.OffloadCompleted:
		c.log.Info("LFC offload completed", "periodic", r.Periodic, "state_query_ms", res.Timings.StateQueryMs,
			"compress_ms", res.Timings.CompressMs, "state_upload_ms", res.Timings.StateUploadMs)
	default:
		c.log.Info("LFC offload ended", "status", string(res.Status), "periodic", r.Periodic)
	}
}

func (c *Core) offload(ctx context.Context, r *OffloadRun) lfcstate.OffloadState {
	now := c.m.now
	fail := func(err error) lfcstate.OffloadState {
		return lfcstate.OffloadState{Status: lfcstate.OffloadFailed, Error: err.Error()}
	}
	t0 := now()
	state, err := c.pg.LocalCacheState(ctx)
	if err != nil {
		return fail(err)
	}
	if c.m.PrewarmStartedDuring(r) {
		return fail(ErrPrewarmDuringOffload)
	}
	if len(state) == 0 {
		c.log.Info("empty LFC state, not uploaded")
		return lfcstate.OffloadState{Status: lfcstate.OffloadSkipped}
	}
	t1 := now()
	body, err := compress(state)
	if err != nil {
		return fail(err)
	}
	t2 := now()
	if c.m.PrewarmStartedDuring(r) {
		return fail(ErrPrewarmDuringOffload)
	}
	if err := c.store.Put(ctx, body); err != nil {
		return fail(err)
	}
	t3 := now()
	return lfcstate.OffloadState{Status: lfcstate.OffloadCompleted, Timings: lfcstate.OffloadTimings{
		StateQueryMs: ms(t1.Sub(t0)), CompressMs: ms(t2.Sub(t1)), StateUploadMs: ms(t3.Sub(t2)),
	}}
}

// compress is zstd at the default level, one frame.
func compress(state []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, fmt.Errorf("compressing LFC state: %w", err)
	}
	defer enc.Close()
	return enc.EncodeAll(state, nil), nil
}

// decompress undoes compress; a body that is not zstd, is truncated, or decompresses to
// more than max bytes is an error.
func decompress(body []byte, max int64) ([]byte, error) {
	if len(body) == 0 {
		return nil, errors.New("decoding LFC state: empty body")
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(max)))
	if err != nil {
		return nil, fmt.Errorf("decoding LFC state: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(body, nil)
	if err != nil {
		return nil, fmt.Errorf("decoding LFC state: %w", err)
	}
	return out, nil
}
