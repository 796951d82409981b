package paths

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/execx"
)

const polkitRule = "packaging/polkit/50-compute-tools.rules"

// polkitHarness runs the rule file with a stand-in for polkit's rule API and prints, for
// each case, what the rule answered ("yes", "no" or "not-handled"), and the helpers the
// rule spawned. polkit.spawn stands in for a helper that succeeds (returns its output)
// when argv[4] is "present" (the generator's poweroff drop-in exists) and fails (throws,
// as polkit does for a non-zero exit) otherwise.
const polkitHarness = `
const fs = require("fs");
const rules = [];
const spawned = [];
const present = process.argv[4] === "present";
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: "not-handled"}, addRule: (f) => rules.push(f),
  spawn: (argv) => { spawned.push(argv); if (!present) { throw new Error("helper exited with status 1"); } return ""; }};
eval(fs.readFileSync(process.argv[2], "utf8"));
const out = [];
for (const c of JSON.parse(process.argv[3])) {
  const action = {id: c.action, lookup: (k) => c.details[k]};
  let r = "not-handled";
  for (const f of rules) {
    const got = f(action, {user: c.user});
    if (got !== undefined && got !== "not-handled") { r = got; break; }
  }
  out.push(r);
}
console.log(JSON.stringify({results: out, spawned: spawned}));
`

// TestPolkitRule runs the shipped rule under node (polkit's rules are JavaScript): it
// grants compute-api exactly its unit operations, and postgres the reload of
// local_proxy.service (compute-configure), the starts of NeonVM's helpers' units
// (compute-init), the restart and stop of compute-rsyslog.service (both), the vm-monitor's
// user set-property on compute-postgres.service (its MemoryHigh=), and nothing else, and leaves every
// other user and action to polkit's other rules. The system test checks the same against
// real polkitd and systemd.
func TestPolkitRule(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (the system test checks the rule with polkitd)")
	}
	type tc struct {
		User    string            `json:"user"`
		Action  string            `json:"action"`
		Details map[string]string `json:"details"`
		want    string
	}
	const manage = "org.freedesktop.systemd1.manage-units"
	unit := func(u, verb string) map[string]string { return map[string]string{"unit": u, "verb": verb} }
	cases := []tc{
		{"compute-api", manage, unit(UnitPostgres, "stop"), "yes"},
		{"compute-api", manage, unit(UnitPostgres, "kill"), "no"},
		{"compute-api", manage, unit(UnitTarget, "stop"), "yes"},
		// Only with the generator's drop-in (COMPUTE_ON_TERMINATED=poweroff): below.
		{"compute-api", manage, unit("poweroff.target", "start"), "no"},
		{"compute-api", manage, unit(UnitTarget, "start"), "no"},
		{"compute-api", manage, unit("reboot.target", "start"), "no"},
		{"compute-api", manage, unit("poweroff.target", "stop"), "no"},
		{"compute-api", manage, unit(UnitInit, "stop"), "yes"},
		{"compute-api", manage, unit(UnitConfigure, "restart"), "yes"},
		{"compute-api", manage, unit(UnitPostgres, "start"), "no"},
		{"compute-api", manage, unit(UnitPostgres, "restart"), "no"},
		{"compute-api", manage, unit(UnitPostgres, "set-property"), "no"},
		{"compute-api", manage, unit(UnitConfigure, "stop"), "no"},
		{"compute-api", manage, unit(UnitInit, "kill"), "no"},
		{"compute-api", manage, unit("compute-api.service", "stop"), "no"},
		{"compute-api", manage, unit("ssh.service", "stop"), "no"},
		{"compute-api", manage, unit("run-u7.service", "start"), "no"}, // systemd-run
		{"compute-api", manage, unit("constructor", "stop"), "no"},
		{"compute-api", manage, map[string]string{}, "no"},
		{"compute-api", manage, unit(UnitPgbouncer, "stop"), "yes"},
		{"compute-api", manage, unit(UnitLocalProxy, "stop"), "yes"},
		{"compute-api", manage, unit(UnitPgbouncer, "start"), "no"},
		{"compute-api", manage, unit(UnitLocalProxy, "reload"), "no"},
		{"postgres", manage, unit(UnitLocalProxy, "reload"), "yes"},
		{"postgres", manage, unit(UnitLocalProxy, "stop"), "not-handled"},
		{"postgres", manage, unit(UnitPgbouncer, "reload"), "not-handled"},
		{"postgres", manage, unit(UnitPostgres, "stop"), "not-handled"},
		// compute-init (postgres) starts NeonVM's helpers' units, with a size only.
		{"postgres", manage, unit(ResizeSwapUnit(1<<30), "start"), "yes"},
		{"postgres", manage, unit(DiskQuotaUnit(10<<20), "start"), "yes"},
		{"postgres", manage, unit(DiskQuotaUnit(0), "start"), "yes"},
		{"postgres", manage, unit(ResizeSwapUnit(1<<30), "stop"), "not-handled"},
		{"postgres", manage, unit(ResizeSwapUnit(1<<30), "restart"), "not-handled"},
		{"postgres", manage, unit("compute-resize-swap@.service", "start"), "not-handled"},
		{"postgres", manage, unit("compute-resize-swap@-1.service", "start"), "not-handled"},
		{"postgres", manage, unit("compute-resize-swap@1\x2fetc.service", "start"), "not-handled"},
		{"postgres", manage, unit("compute-disk-quota@1.service.d", "start"), "not-handled"},
		{"postgres", manage, unit("xcompute-disk-quota@1.service", "start"), "not-handled"},
		{"postgres", manage, unit("compute-disk-quota@1.socket", "start"), "not-handled"},
		{"postgres", manage, map[string]string{"verb": "start"}, "not-handled"},
		// compute-init and compute-configure (postgres) restart and stop the log shipping.
		{"postgres", manage, unit(UnitRsyslog, "restart"), "yes"},
		{"postgres", manage, unit(UnitRsyslog, "stop"), "yes"},
		{"postgres", manage, unit(UnitRsyslog, "start"), "not-handled"},
		{"postgres", manage, unit(UnitRsyslog, "set-property"), "not-handled"},
		{"postgres", manage, unit("rsyslog.service", "restart"), "not-handled"},
		{"compute-api", manage, unit(UnitRsyslog, "restart"), "no"},
		{"postgres", "org.freedesktop.login1.reboot", nil, "not-handled"},
		{"compute-api", manage, unit(ResizeSwapUnit(1<<30), "start"), "no"},
		{"nobody", manage, unit(ResizeSwapUnit(1<<30), "start"), "not-handled"},
		{"root", manage, unit(UnitPostgres, "stop"), "not-handled"},
		{"compute-api", "org.freedesktop.systemd1.manage-unit-files", unit(UnitPostgres, "stop"), "not-handled"},
		{"compute-api", "org.freedesktop.login1.reboot", nil, "not-handled"},
		// The vm-monitor: MemoryHigh= of compute-postgres (set-property), nothing else.
		{VMMonitorUser, manage, unit(UnitPostgres, "set-property"), "yes"},
		{VMMonitorUser, manage, unit(UnitPostgres, "stop"), "no"},
		{VMMonitorUser, manage, unit(UnitPostgres, "restart"), "no"},
		{VMMonitorUser, manage, unit(UnitPostgres, "kill"), "no"},
		{VMMonitorUser, manage, unit(UnitPostgres, "start"), "no"},
		{VMMonitorUser, manage, unit(UnitVMMonitor, "set-property"), "no"},
		{VMMonitorUser, manage, unit("compute-api.service", "set-property"), "no"},
		{VMMonitorUser, manage, unit(UnitTarget, "set-property"), "no"},
		{VMMonitorUser, manage, unit("system.slice", "set-property"), "no"},
		{VMMonitorUser, manage, unit("run-u7.service", "start"), "no"}, // systemd-run
		{VMMonitorUser, manage, map[string]string{}, "no"},
		{VMMonitorUser, "org.freedesktop.systemd1.manage-unit-files", unit(UnitPostgres, "set-property"), "not-handled"},
		{"postgres", manage, unit(UnitPostgres, "set-property"), "not-handled"},
		{"compute-api", manage, unit(UnitPostgres, "set-property"), "no"},
	}
	dir := t.TempDir()
	harness := filepath.Join(dir, "harness.js")
	if err := os.WriteFile(harness, []byte(polkitHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	// run runs the cases with the poweroff drop-in present or not, and returns the
	// helpers the rule spawned.
	run := func(cases []tc, dropIn string) [][]string {
		t.Helper()
		arg, _ := json.Marshal(cases)
		res, err := execx.Run(context.Background(), execx.Cmd{Path: node, Args: []string{harness, filepath.Join(repoRoot, polkitRule), string(arg), dropIn}})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Results []string
			Spawned [][]string
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(string(res.Stdout))), &got); err != nil || len(got.Results) != len(cases) {
			t.Fatalf("harness output %q: %v", res.Stdout, err)
		}
		for i, c := range cases {
			if got.Results[i] != c.want {
				t.Errorf("drop-in %s: %s %s %v: %s, want %s", dropIn, c.User, c.Action, c.Details, got.Results[i], c.want)
			}
		}
		return got.Spawned
	}
	// Without the drop-in: poweroff.target is refused, after one look for the file.
	test := []string{"/usr/bin/test", "-f", GeneratorDir + "/" + PoweroffDropIn}
	if spawned := run(cases, "absent"); len(spawned) != 1 || !slices.Equal(spawned[0], test) {
		t.Errorf("helpers spawned: %q, want one %q (for poweroff.target only)", spawned, test)
	}
	// With it: poweroff.target is allowed to compute-api, and nothing else changes.
	withDropIn := []tc{
		{"compute-api", manage, unit("poweroff.target", "start"), "yes"},
		{"compute-api", manage, unit("poweroff.target", "stop"), "no"},
		{"compute-api", manage, unit("reboot.target", "start"), "no"},
		{"compute-api", manage, unit(UnitPostgres, "stop"), "yes"},
		{"postgres", manage, unit("poweroff.target", "start"), "not-handled"},
		{"nobody", manage, unit("poweroff.target", "start"), "not-handled"},
	}
	if spawned := run(withDropIn, "present"); len(spawned) != 1 || !slices.Equal(spawned[0], test) {
		t.Errorf("helpers spawned: %q, want one %q", spawned, test)
	}
	nfpm := strings.Join(readLines(t, "nfpm.yaml"), "\n")
	if !strings.Contains(nfpm, "src: "+polkitRule+"\n    dst: /usr/share/polkit-1/rules.d/50-compute-tools.rules") {
		t.Error("nfpm.yaml does not ship the polkit rule to /usr/share/polkit-1/rules.d")
	}
}
