package compute

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
)

// Core dumps of Postgres. compute-postgres.service has LimitCORE=infinity (compute_ctl
// sets RLIMIT_CORE unlimited for the same reason); where the kernel hands cores to
// systemd-coredump (core_pattern "|.../systemd-coredump ..."), that is where they are:
// it logs a backtrace in the journal and `coredumpctl` lists, shows and debugs them.
// Elsewhere, with a core_pattern without a directory ("core", as on Neon's EKS nodes),
// the core lands in Postgres's working directory, PGDATA, and the stop hook does what
// compute_ctl does after Postgres exits: look there for "core" and "core.*" files and log
// `gdb --batch -q -ex bt <postgres> <core>`. Unlike compute_ctl (which reports every core
// file in PGDATA at every exit, lldb as second choice) we report only the cores of this
// lifecycle (a kept standalone PGDATA would report an old core forever), at most
// maxCores of them, each gdb bounded by gdbTimeout (the hook runs within the unit's
// TimeoutStopSec=), and say so when gdb is not installed.
const (
	maxCores   = 3
	gdbTimeout = 20 * time.Second
)

// coreReport looks for Postgres's core dumps after it stopped and logs their backtraces.
type coreReport struct {
	Dir         string    // where cores land with a relative core_pattern: PGDATA
	PGBin       string    // the postgres binary, for gdb's symbols
	GDB         string    // the debugger
	CorePattern string    // the kernel's core_pattern ("" when it could not be read)
	Since       time.Time // cores older than this are an earlier lifecycle's
	Dumped      bool      // systemd saw the main process dump core (EXIT_CODE=dumped)
	Log         *slog.Logger
}

func readCorePattern() string {
	b, err := os.ReadFile(paths.CorePatternFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// run logs what there is to know about this lifecycle's core dumps of Postgres.
func (c coreReport) run(ctx context.Context) {
	log := orDefault(c.Log)
	switch p := c.CorePattern; {
	case strings.HasPrefix(p, "|") && strings.Contains(p, "systemd-coredump"):
		if c.Dumped {
			log.Warn("postgres dumped core: systemd-coredump has it and logged its backtrace; see coredumpctl info postgres",
				"core_pattern", p)
		}
		return
	case strings.HasPrefix(p, "|") || strings.Contains(p, "/"):
		// Cores go to another program or directory than PGDATA.
		if c.Dumped {
			log.Warn("postgres dumped core: no backtrace here, the kernel hands cores elsewhere", "core_pattern", p)
		}
		return
	}
	cores, err := c.find()
	if err != nil {
		log.Warn("could not look for core dumps", "dir", c.Dir, "err", err)
		return
	}
	if len(cores) == 0 {
		if c.Dumped {
			log.Warn("postgres dumped core, but no core file is in PGDATA", "dir", c.Dir, "core_pattern", c.CorePattern)
		}
		return
	}
	if _, err := os.Stat(c.GDB); err != nil {
		for _, core := range cores {
			log.Warn("core dump found; no backtrace: gdb is not installed (install gdb, or systemd-coredump)",
				"core", core, "gdb", c.GDB)
		}
		return
	}
	for _, core := range cores {
		log.Warn("core dump found, collecting backtrace", "core", core)
		gctx, cancel := context.WithTimeout(ctx, gdbTimeout)
		res, err := execx.Run(gctx, execx.Cmd{Path: c.GDB, Args: []string{"--batch", "-q", "-ex", "bt", c.PGBin, core}, Log: log})
		cancel()
		if err != nil {
			log.Warn("gdb failed on the core dump", "core", core, "err", err)
			continue
		}
		log.Warn("core dump backtrace", "core", core, "backtrace", strings.TrimSpace(string(res.Stdout)))
	}
}

// find returns the core files in Dir modified since Since, newest first, at most
// maxCores.
func (c coreReport) find() ([]string, error) {
	entries, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type core struct {
		path string
		mod  time.Time
	}
	var found []core
	for _, e := range entries {
		if n := e.Name(); n != "core" && !strings.HasPrefix(n, "core.") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().Before(c.Since) {
			continue
		}
		found = append(found, core{filepath.Join(c.Dir, e.Name()), info.ModTime()})
	}
	slices.SortFunc(found, func(a, b core) int { return b.mod.Compare(a.mod) })
	var out []string
	for i, f := range found {
		if i == maxCores {
			break
		}
		out = append(out, f.path)
	}
	return out, nil
}
