// Package warmup warms a pooled VM up for the compute it will be given, as compute_ctl's
// prewarm_postgres_vm_memory does: a throwaway cluster is made with initdb beside PGDATA
// (<pgdata>.warmup, named, written and removed by package pgdata), a Postgres is started
// on it and, once it is ready, stopped with SIGQUIT, and the directory is removed. The
// binaries and libraries are then in the page cache, and the VM's memory (512 MB of
// shared buffers) has been handed out by the host, so that the real start is quicker.
//
// It never fails the compute: a missing or failing initdb, a Postgres that does not
// start, a directory that cannot be written or removed is a warning, and the directory
// is removed. A directory a crash left behind is removed first. Ending the context
// aborts it at once (initdb and its bootstrap backend are killed, the throwaway
// postmaster gets SIGQUIT) and Run returns once its processes are gone and the directory
// is removed.
//
// Deliberate differences from compute_ctl (docs/architecture.md, "The pooled VM's
// warm-up"): shared_preload_libraries='neon' only where the neon library is installed
// (compute_ctl always sets it, and vanilla Postgres then refuses to start, which fails
// compute_ctl); no TCP listener (compute_ctl listens on localhost:51055, so a taken port
// fails it); initdb without its flush to disk (--no-sync: the cluster is thrown away);
// the throwaway Postgres runs in compute-init's cgroup, not under cgexec in the neon-postgres
// cgroup; and a failure is a warning, never the end of the compute.
package warmup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/pgready"
)

// Options say where and how to warm up.
type Options struct {
	// PGData is the compute's PGDATA: the throwaway cluster is pgdata.Warmup(PGData).
	PGData string
	// PGBin is the postgres binary; initdb and pg_config are taken beside it.
	PGBin string
	// OSUser runs initdb and Postgres when the caller is root.
	OSUser string
	// Log is the caller's logger (nil: slog.Default()).
	Log *slog.Logger

	// afterReady, when set, runs once the throwaway Postgres is ready, before it is
	// stopped (tests: an abort while it runs).
	afterReady func(ctx context.Context)
}

// Outcome is how a warm-up ended.
type Outcome string

const (
	// Warmed: the throwaway Postgres started and was stopped.
	Warmed Outcome = "warmed"
	// Aborted: the context ended first (a config arrived, or the compute is stopped).
	Aborted Outcome = "aborted"
	// Failed: a step failed (Result.Err; logged as a warning).
	Failed Outcome = "failed"
)

// Result is what Run did.
type Result struct {
	Outcome Outcome
	// Err is why it failed, or why the directory could not be removed.
	Err error
	// Neon: the neon library was found and preloaded.
	Neon bool
	// LeftoverRemoved: a warm-up directory of an earlier run was found and removed.
	LeftoverRemoved bool
}

// Run warms up (see the package comment) and returns once the throwaway cluster is gone.
// Nothing it meets fails the caller: the result says what happened, and it is logged.
func Run(ctx context.Context, o Options) Result {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	dir := pgdata.Warmup(o.PGData)
	var res Result
	removed, err := pgdata.RemoveWarmup(o.PGData)
	if err != nil {
		res.Outcome, res.Err = Failed, err
		log.Warn("warm-up skipped: a warm-up directory of an earlier run cannot be removed", "dir", dir.Path, "err", err)
		return res
	}
	if removed {
		res.LeftoverRemoved = true
		log.Info("removed a warm-up directory an earlier run left behind", "dir", dir.Path)
	}
	if ctx.Err() != nil {
		res.Outcome = Aborted
		return res
	}
	log.Info("warming up the VM: a throwaway initdb and Postgres start", "dir", dir.Path)
	err = warm(ctx, o, dir, &res, log)
	if _, rerr := pgdata.RemoveWarmup(o.PGData); rerr != nil {
		log.Warn("the warm-up directory could not be removed", "dir", dir.Path, "err", rerr)
		err = errors.Join(err, rerr)
	}
	ms := time.Since(start).Milliseconds()
	switch {
	case ctx.Err() != nil:
		res.Outcome = Aborted
		log.Info("warm-up aborted: the compute goes on without it", "warmup_ms", ms)
	case err != nil:
		res.Outcome = Failed
		log.Warn("warm-up failed: the compute goes on without it", "err", err, "warmup_ms", ms)
	default:
		res.Outcome = Warmed
		log.Info("warm-up done", "warmup_ms", ms, "neon", res.Neon)
	}
	res.Err = err
	return res
}

// warm makes the throwaway cluster and starts and stops a Postgres on it.
func warm(ctx context.Context, o Options, dir pgdata.Dir, res *Result, log *slog.Logger) error {
	if err := dir.Initdb(ctx, pgdata.InitdbOptions{Initdb: paths.Sibling(o.PGBin, "initdb"),
		Superuser: paths.DefaultPGUser, OSUser: o.OSUser, NoSync: true, OwnGroup: true}); err != nil {
		return err
	}
	res.Neon = neonInstalled(ctx, o.PGBin, log)
	if err := dir.WriteWarmupConf(res.Neon); err != nil {
		return err
	}
	return startStop(ctx, o, dir, log)
}

// neonLibrary is the neon extension's shared library, in pg_config --pkglibdir.
const neonLibrary = "neon.so"

// neonInstalled reports whether the neon library is in the pkglibdir of the pg_config
// beside pgbin. Without pg_config (or with one that fails) it is taken as absent.
func neonInstalled(ctx context.Context, pgbin string, log *slog.Logger) bool {
	res, err := execx.Run(ctx, execx.Cmd{Path: paths.Sibling(pgbin, "pg_config"), Args: []string{"--pkglibdir"}, Log: log})
	if err != nil {
		log.Info("warm-up without the neon library: pg_config cannot tell where libraries are", "err", err)
		return false
	}
	lib := filepath.Join(strings.TrimSpace(string(res.Stdout)), neonLibrary)
	if _, err := os.Stat(lib); err != nil {
		log.Debug("warm-up without the neon library: not installed", "path", lib)
		return false
	}
	return true
}

// startStop starts Postgres on dir, waits until it is ready (or exits, or ctx ends) and
// stops it with SIGQUIT, as compute_ctl does; it returns once the postmaster has exited.
func startStop(ctx context.Context, o Options, dir pgdata.Dir, log *slog.Logger) error {
	pgctx, stop := context.WithCancel(ctx)
	defer stop()
	p, err := execx.Start(pgctx, execx.Cmd{Path: o.PGBin, Args: []string{"-D", dir.Path}, User: o.OSUser,
		CancelSignal: syscall.SIGQUIT, Log: log})
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	// Postgres writes nothing to stdout; the pipe is drained all the same.
	go func() { _, _ = io.Copy(io.Discard, p.Stdout()) }()
	exited := make(chan struct{})
	var werr error
	go func() {
		_, werr = p.Wait()
		close(exited)
	}()
	_, err = pgready.Wait(ctx, dir.Path, pgready.Options{Wake: exited, Check: func() error {
		select {
		case <-exited:
			if werr != nil {
				return fmt.Errorf("postgres exited before it was ready: %w", werr)
			}
			return errors.New("postgres exited before it was ready")
		default:
			return nil
		}
	}})
	if err == nil {
		log.Debug("throwaway postgres ready; stopping it (SIGQUIT)")
		if o.afterReady != nil {
			o.afterReady(ctx)
		}
	}
	stop()
	<-exited
	return err
}
