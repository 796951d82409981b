package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/computetools/compute-tools/internal/monitord"
	"github.com/computetools/compute-tools/internal/sysd"
	"github.com/computetools/compute-tools/internal/vmmonitord"
)

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("state dir: no such file"), 1},
		{monitord.ErrConfig, 78},
		{fmt.Errorf("run: %w", fmt.Errorf("%w: interval too long", monitord.ErrConfig)), 78},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if cliExitCode(0) != 0 || cliExitCode(1) != 78 || cliExitCode(80) != 78 {
		t.Errorf("kong exit codes: %d %d %d", cliExitCode(0), cliExitCode(1), cliExitCode(80))
	}
}

func TestVMMonitorExitCodes(t *testing.T) {
	if got := exitCode(fmt.Errorf("listen: %w", vmmonitord.ErrConfig)); got != 78 {
		t.Errorf("vm-monitor configuration error: exit %d, want 78", got)
	}
	// AUTOSCALING not true: refused, not restarted.
	if got := exitCode(vmmonitord.Main(context.Background(), vmmonitord.Settings{Autoscaling: "false"}, slog.New(slog.DiscardHandler))); got != 78 {
		t.Errorf("vm-monitor without AUTOSCALING=true: exit %d, want 78", got)
	}
	// The connection to systemd lost: an error the unit restarts it for.
	if got := exitCode(fmt.Errorf("set MemoryHigh of compute-postgres.service: %w: EOF", sysd.ErrDisconnected)); got != 1 {
		t.Errorf("vm-monitor that lost systemd: exit %d, want 1", got)
	}
}
