package compute

import (
	"context"
	"log/slog"
	"os"

	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/warmup"
)

// warmer runs the pooled VM's warm-up of one start (internal/warmup) beside the wait for
// POST /configure, as compute_ctl warms up a compute started without a spec. The wait
// is not held back by it: the warm-up runs in the background, and a config (or a
// /terminate) that ends the wait aborts it at once; Prepare goes on meanwhile and waits,
// at its very end, for the warm-up's processes to be gone and its directory removed.
// A start that gets its config from the file, the control plane or an earlier POST
// /configure never warms up; it only removes, in the background too, a warm-up directory
// a crash left behind.
type warmer struct {
	pgdata string
	run    func(ctx context.Context) warmup.Result
	log    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// newWarmer returns the warmer of a start with cfg (the warm-up itself only if
// cfg.Warmup).
func newWarmer(cfg Settings, log *slog.Logger) *warmer {
	w := &warmer{pgdata: cfg.PGData, log: log}
	if cfg.Warmup {
		o := warmup.Options{PGData: cfg.PGData, PGBin: cfg.PGBin, OSUser: cfg.OSUser, Log: log}
		w.run = func(ctx context.Context) warmup.Result { return warmup.Run(ctx, o) }
	}
	return w
}

// enabled reports whether this start may warm up (a nil warmer may not).
func (w *warmer) enabled() bool { return w != nil && w.run != nil }

// start begins the warm-up in the background, once.
func (w *warmer) start(ctx context.Context) {
	if !w.enabled() || w.done != nil {
		return
	}
	w.spawn(ctx, func(ctx context.Context) { w.run(ctx) })
}

// abort ends a running warm-up without waiting for it.
func (w *warmer) abort() {
	if w != nil && w.cancel != nil {
		w.cancel()
	}
}

// sweep removes, in the background, a warm-up directory an earlier run left behind,
// unless a warm-up ran (which removes it itself). It costs the start one lstat(2).
func (w *warmer) sweep() {
	if w == nil || w.done != nil {
		return
	}
	if _, err := os.Lstat(pgdata.Warmup(w.pgdata).Path); err != nil {
		return
	}
	w.spawn(context.Background(), func(context.Context) {
		if _, err := pgdata.RemoveWarmup(w.pgdata); err != nil {
			orDefault(w.log).Warn("a warm-up directory an earlier run left behind cannot be removed", "err", err)
			return
		}
		orDefault(w.log).Info("removed a warm-up directory an earlier run left behind", "dir", pgdata.Warmup(w.pgdata).Path)
	})
}

// finish aborts a warm-up that still runs and waits until its processes are gone and
// its directory is removed (or the sweep is done).
func (w *warmer) finish() {
	if w == nil || w.done == nil {
		return
	}
	w.abort()
	<-w.done
}

func (w *warmer) spawn(ctx context.Context, fn func(context.Context)) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		fn(ctx)
	}()
}
