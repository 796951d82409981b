package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/computetools/compute-tools/internal/monitord"
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
}
