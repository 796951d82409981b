package main

import (
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/computetools/compute-tools/cmd/internal/flagtest"
	"github.com/computetools/compute-tools/internal/paths"
)

// TestFlagDefaultsFromPaths checks that every flag with an environment variable and a
// default takes that default from internal/paths, and that the values are today's.
func TestFlagDefaultsFromPaths(t *testing.T) {
	var c cli
	k, err := kong.New(&c, kong.Vars(paths.Vars()))
	if err != nil {
		t.Fatal(err)
	}
	flagtest.CheckDefaults(t, k.Model.Node, paths.Vars(), map[string]string{
		"state-dir":   "/run/compute",
		"connstr":     "postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres",
		"interval":    "500ms",
		"addr":        "0.0.0.0:10301",
		"vsock-port":  "10301",
		"cgroup-unit": "compute-postgres.service",
		"autoscaling": "false",
	})
}

// TestCommands checks the command line: no subcommand is the activity monitor with its
// flags as before, vm-monitor takes its own and the shared ones, and an empty
// COMPUTE_VM_MONITOR_ADDR turns the TCP listener off.
func TestCommands(t *testing.T) {
	parse := func(t *testing.T, env map[string]string, args ...string) (string, cli) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var c cli
		k, err := kong.New(&c, kong.Vars(paths.Vars()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, err := k.Parse(args)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return ctx.Command(), c
	}
	t.Run("default", func(t *testing.T) {
		cmd, c := parse(t, nil)
		if cmd != "activity" || c.Activity.Interval != 500*time.Millisecond || c.StateDir != "/run/compute" {
			t.Errorf("%q %+v", cmd, c)
		}
	})
	t.Run("default with today's flags", func(t *testing.T) {
		cmd, c := parse(t, nil, "--interval", "2s", "-C", "host=/x", "--state-dir", "/s", "--installed-extensions-collection-interval", "5m")
		if cmd != "activity" || c.Activity.Interval != 2*time.Second || c.Connstr != "host=/x" || c.StateDir != "/s" || c.Activity.ExtStats != 5*time.Minute {
			t.Errorf("%q %+v", cmd, c)
		}
	})
	t.Run("vm-monitor", func(t *testing.T) {
		cmd, c := parse(t, nil, "vm-monitor", "--vsock-port", "0", "-C", "host=/y", "--cgroup-unit", "pg.service")
		if cmd != "vm-monitor" || c.VMMonitor.Addr != "0.0.0.0:10301" || c.VMMonitor.VsockPort != 0 || c.Connstr != "host=/y" || c.VMMonitor.CgroupUnit != "pg.service" {
			t.Errorf("%q %+v", cmd, c)
		}
	})
	t.Run("vm-monitor from the environment", func(t *testing.T) {
		cmd, c := parse(t, map[string]string{"COMPUTE_VM_MONITOR_ADDR": "", "COMPUTE_VM_MONITOR_VSOCK_PORT": "1234", "COMPUTE_STATE_DIR": "/st"}, "vm-monitor")
		if cmd != "vm-monitor" || c.VMMonitor.Addr != "" || c.VMMonitor.VsockPort != 1234 || c.StateDir != "/st" {
			t.Errorf("%q %+v", cmd, c)
		}
	})
	// AUTOSCALING: false unless the environment (the unit's EnvironmentFile) says
	// otherwise; the value is passed on as it is, for vmmonitord.AutoscalingOn.
	t.Run("vm-monitor AUTOSCALING", func(t *testing.T) {
		if _, c := parse(t, nil, "vm-monitor"); c.VMMonitor.Autoscaling != "false" {
			t.Errorf("default AUTOSCALING %q", c.VMMonitor.Autoscaling)
		}
		if _, c := parse(t, map[string]string{"AUTOSCALING": "true"}, "vm-monitor"); c.VMMonitor.Autoscaling != "true" {
			t.Errorf("AUTOSCALING=true read as %q", c.VMMonitor.Autoscaling)
		}
		if _, c := parse(t, map[string]string{"AUTOSCALING": "yes"}, "vm-monitor"); c.VMMonitor.Autoscaling != "yes" {
			t.Errorf("AUTOSCALING=yes read as %q", c.VMMonitor.Autoscaling)
		}
	})
	t.Run("activity flags are not vm-monitor's", func(t *testing.T) {
		var c cli
		k, err := kong.New(&c, kong.Vars(paths.Vars()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Parse([]string{"vm-monitor", "--interval", "1s"}); err == nil {
			t.Error("vm-monitor accepted --interval")
		}
		if _, err := k.Parse([]string{"vm-monitor", "--vsock-port", "-1"}); err == nil {
			t.Error("vm-monitor accepted a negative vsock port")
		}
	})
}
