// Command watchercost measures the CPU the vm-monitor's cgroup watcher costs on a VM with a
// memory controller, where it samples memory.stat ten times a second (this development VM
// has no cgroup v2 memory controller, so the packaged vm-monitor cannot be measured doing
// that here: bench/vm-monitor-usage.sh measures the other case). It runs the real
// cgroup.Watcher (internal/vmmonitor/cgroup) on a directory holding a memory.stat and a
// memory.events of a cgroup v2 service for -d, then prints the process's own CPU time
// (getrusage: every thread) as a share of one core. `-mode ticker` runs only a bare
// 100 ms ticker of the clock the watcher uses (a timerfd, internal/clock), the part that
// is Go waking up, and `-mode goticker` a bare time.Ticker, for comparison. Run it with
// the runtime settings of the unit (GOMAXPROCS=1). A regular file is cheaper to read
// than the kernel's generated memory.stat, so by default the figure is a lower bound
// for the read itself; `-dir` points the watcher at a real cgroup directory instead
// (on a cgroup v1 host such as this VM, a memory cgroup the caller made: its memory.stat
// has the same active_anon and inactive_anon lines). A measuring tool, not part of the
// package.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/computetools/compute-tools/internal/clock"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup"
	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup/cgrouptest"
)

func main() {
	d := flag.Duration("d", time.Minute, "how long to run")
	mode := flag.String("mode", "watcher", "watcher (the cgroup watcher), ticker (a bare 100 ms ticker of the watcher's clock) or goticker (a bare time.Ticker)")
	cgDir := flag.String("dir", "", "watch this cgroup directory instead of regular files")
	flag.Parse()
	if err := run(*mode, *cgDir, *d); err != nil {
		fmt.Fprintln(os.Stderr, "watchercost:", err)
		os.Exit(1)
	}
}

func run(mode, cgDir string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start, cpu0 := time.Now(), cpuTime()
	switch mode {
	case "watcher":
		dir := cgDir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "watchercost")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			if err := cgrouptest.Write(tmp); err != nil {
				return err
			}
			dir = tmp
		}
		w := cgroup.NewWatcher(cgroup.FixedDir(dir), cgroup.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		w.SetThreshold(1 << 40) // never over: no upscale requests
		if err := w.Run(ctx); err != nil {
			return err
		}
		if s := w.Last(); s.History.Samples == 0 {
			return fmt.Errorf("the watcher took no sample")
		}
	case "ticker":
		t := clock.System{}.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		takeTicks(ctx, t.C())
	case "goticker":
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		takeTicks(ctx, t.C)
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	if cgDir != "" {
		mode += " dir=" + cgDir
	}
	fmt.Printf("mode=%s wall_s=%.1f cpu_ms=%.1f cpu_pct_of_core=%.3f\n", mode, wall.Seconds(), float64(cpu.Microseconds())/1000, 100*cpu.Seconds()/wall.Seconds())
	return nil
}

// takeTicks receives ticks from c until ctx ends.
func takeTicks(ctx context.Context, c <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
		}
	}
}

// cpuTime is the process's user and system time (all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
