package paths

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/execx"
)

const polkitRule = "packaging/polkit/50-compute-tools.rules"

// polkitHarness runs the rule file with a stand-in for polkit's rule API and prints, for
// each case, what the rule answered ("yes", "no" or "not-handled").
const polkitHarness = `
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: "not-handled"}, addRule: (f) => rules.push(f)};
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
console.log(JSON.stringify(out));
`

// TestPolkitRule runs the shipped rule under node (polkit's rules are JavaScript): it
// grants compute-api exactly its unit operations, and postgres the reload of
// local_proxy.service (compute-configure), the starts of NeonVM's helpers' units
// (compute-init) and the restart and stop of compute-rsyslog.service (both), and nothing else, and leaves every
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
		{"compute-api", manage, unit("poweroff.target", "start"), "yes"},
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
	}
	arg, _ := json.Marshal(cases)
	dir := t.TempDir()
	harness := filepath.Join(dir, "harness.js")
	if err := os.WriteFile(harness, []byte(polkitHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := execx.Run(context.Background(), execx.Cmd{Path: node, Args: []string{harness, filepath.Join(repoRoot, polkitRule), string(arg)}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(res.Stdout))), &got); err != nil || len(got) != len(cases) {
		t.Fatalf("harness output %q: %v", res.Stdout, err)
	}
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s %s %v: %s, want %s", c.User, c.Action, c.Details, got[i], c.want)
		}
	}
	nfpm := strings.Join(readLines(t, "nfpm.yaml"), "\n")
	if !strings.Contains(nfpm, "src: "+polkitRule+"\n    dst: /usr/share/polkit-1/rules.d/50-compute-tools.rules") {
		t.Error("nfpm.yaml does not ship the polkit rule to /usr/share/polkit-1/rules.d")
	}
}
