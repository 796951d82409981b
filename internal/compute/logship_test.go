package compute

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
)

// fakeLogUnits records the log shipping's unit calls; state is the unit's ActiveState.
type fakeLogUnits struct {
	mu      sync.Mutex
	calls   []string
	state   string
	restart error
	stop    error
}

func (u *fakeLogUnits) ActiveState(context.Context, string) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state, nil
}

func (u *fakeLogUnits) RestartUnit(_ context.Context, name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, "restart "+name)
	if u.restart == nil {
		u.state = "active"
	}
	return u.restart
}

func (u *fakeLogUnits) StopUnit(_ context.Context, name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, "stop "+name)
	if u.stop != nil {
		return u.stop
	}
	u.state = "inactive"
	return nil
}

func (u *fakeLogUnits) took() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.calls
	u.calls = nil
	return c
}

func shipSpec(t *testing.T, audit spec.ComputeAudit, export string) *spec.ComputeSpec {
	t.Helper()
	ep, proj := "ep-test-123", "proj-456"
	s := &spec.ComputeSpec{AuditLogLevel: audit, EndpointID: &ep, ProjectID: &proj}
	if export != "" {
		s.LogsExportHost = &export
	}
	return s
}

type shipRig struct {
	cfg   Settings
	units *fakeLogUnits
	d     *Deps
	logs  *bytes.Buffer
}

func newShipRig(t *testing.T) *shipRig {
	r := &shipRig{units: &fakeLogUnits{state: "inactive"}, logs: &bytes.Buffer{}}
	// Any existing file stands for rsyslogd: the units are fakes.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = Settings{StateDir: t.TempDir(), PGData: t.TempDir(), Rsyslogd: exe, AuditEndpoint: "collector.host.tld:5555",
		RsyslogGTLS: exe, RsyslogWorkDir: t.TempDir(), RsyslogCAFiles: []string{"/nonexistent/ca.crt", exe}}
	r.d = &Deps{LogUnits: r.units, Log: slog.New(slog.NewTextHandler(r.logs, nil))}
	return r
}

func (r *shipRig) conf(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(paths.RsyslogConfFile(r.cfg.StateDir))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sameCalls(got []string, want ...string) bool {
	return strings.Join(got, ";") == strings.Join(want, ";")
}

// At a start, the compliance audit fails the compute when it cannot be shipped, as
// compute_ctl; logs_export_host never does.
func TestShipLogsAtStart(t *testing.T) {
	restart := "restart " + paths.UnitRsyslog
	t.Run("audit and export", func(t *testing.T) {
		r := newShipRig(t)
		r.cfg.AuditTLSEndpoint = "tls.host.tld:5556"
		if err := shipLogs(context.Background(), r.cfg, shipSpec(t, spec.AuditExtended, "collector.cvc.local:514"), r.d, true, false); err != nil {
			t.Fatal(err)
		}
		if c := r.units.took(); !sameCalls(c, restart) {
			t.Errorf("calls %v", c)
		}
		conf := r.conf(t)
		for _, want := range []string{`target="tls.host.tld" port="5556"`, `StreamDriver="gtls"`, `DefaultNetstreamDriverCAFile="` + r.cfg.RsyslogCAFiles[1] + `"`, `"ep-test-123"`, `"proj-456"`,
			`File="` + filepath.Join(r.cfg.PGData, "log") + `/*.log"`, `target="collector.cvc.local" port="514"`} {
			if !strings.Contains(conf, want) {
				t.Errorf("config lacks %s:\n%s", want, conf)
			}
		}
		if fi, err := os.Stat(filepath.Join(r.cfg.PGData, "log")); err != nil || !fi.IsDir() {
			t.Errorf("no log directory for the audit files: %v", err)
		}
		// A start restarts even an unchanged, running shipping (PGDATA may be new).
		if err := shipLogs(context.Background(), r.cfg, shipSpec(t, spec.AuditExtended, "collector.cvc.local:514"), r.d, true, false); err != nil {
			t.Fatal(err)
		}
		if c := r.units.took(); !sameCalls(c, restart) {
			t.Errorf("second start: calls %v", c)
		}
	})
	for _, tc := range []struct {
		name   string
		change func(*shipRig, *spec.ComputeSpec)
		want   string
		// exportToo: the problem stops logs_export_host's shipping as well (logged).
		exportToo bool
	}{
		{"no endpoint", func(r *shipRig, _ *spec.ComputeSpec) { r.cfg.AuditEndpoint = "" },
			"AUDIT_LOGGING_ENDPOINT and AUDIT_LOGGING_TLS_ENDPOINT are both empty", false},
		{"malformed endpoint", func(r *shipRig, _ *spec.ComputeSpec) { r.cfg.AuditEndpoint = "collector.host.tld" },
			"AUDIT_LOGGING_ENDPOINT: \"collector.host.tld\" is not host:port: no port", false},
		{"malformed TLS endpoint", func(r *shipRig, _ *spec.ComputeSpec) { r.cfg.AuditTLSEndpoint = `x" y:1` },
			"AUDIT_LOGGING_TLS_ENDPOINT", false},
		{"bad endpoint id", func(_ *shipRig, s *spec.ComputeSpec) { v := `ep"x`; s.EndpointID = &v }, "endpoint_id", false},
		{"rsyslogd missing", func(r *shipRig, _ *spec.ComputeSpec) { r.cfg.Rsyslogd = "/nonexistent/rsyslogd" },
			"rsyslogd is not installed (Debian package rsyslog)", true},
		{"unit fails", func(r *shipRig, _ *spec.ComputeSpec) { r.units.restart = errors.New("job failed") },
			"restart compute-rsyslog.service (journalctl -u compute-rsyslog.service says why): job failed", true},
		{"no systemd", func(r *shipRig, _ *spec.ComputeSpec) { r.d.LogUnits = nil }, "no connection to systemd", true},
		{"no CA bundle", func(r *shipRig, _ *spec.ComputeSpec) {
			r.cfg.AuditTLSEndpoint, r.cfg.RsyslogCAFiles = "tls.host.tld:6514", []string{"/nonexistent/a.crt", "/nonexistent/b.crt"}
		}, "AUDIT_LOGGING_TLS_ENDPOINT: TLS needs the system's CA bundle (package ca-certificates), and none of /nonexistent/a.crt, /nonexistent/b.crt exists", false},
		{"no TLS driver", func(r *shipRig, _ *spec.ComputeSpec) {
			r.cfg.AuditTLSEndpoint, r.cfg.RsyslogGTLS = "tls.host.tld:6514", "/nonexistent/lmnsd_gtls.so"
		}, "TLS needs rsyslog's gtls driver (Debian package rsyslog-gnutls)", false},
	} {
		t.Run("audit: "+tc.name, func(t *testing.T) {
			r := newShipRig(t)
			s := shipSpec(t, spec.AuditFull, "")
			tc.change(r, s)
			err := shipLogs(context.Background(), r.cfg, s, r.d, true, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "audit log shipping: ") {
				t.Errorf("shipLogs = %v, want the start to fail with %q", err, tc.want)
			}
			if c := r.units.took(); r.units.restart != nil && !sameCalls(c, restart, "stop "+paths.UnitRsyslog) {
				t.Errorf("a unit that did not start: calls %v, want it stopped after the restart", c)
			}
		})
		t.Run("export only: "+tc.name, func(t *testing.T) {
			r := newShipRig(t)
			s := shipSpec(t, spec.AuditBase, "collector.cvc.local:514") // Base: no shipping of audit files
			tc.change(r, s)
			if err := shipLogs(context.Background(), r.cfg, s, r.d, true, false); err != nil {
				t.Errorf("shipLogs = %v: logs_export_host must never fail the compute", err)
			}
			logged := strings.Contains(r.logs.String(), "log shipping not set up; the compute goes on") && strings.Contains(r.logs.String(), tc.want)
			if logged != tc.exportToo {
				t.Errorf("the error line %q logged: %v, want %v:\n%s", tc.want, logged, tc.exportToo, r.logs)
			}
			if !tc.exportToo {
				if c := r.units.took(); !sameCalls(c, restart) || !strings.Contains(r.conf(t), `target="collector.cvc.local" port="514"`) {
					t.Errorf("logs_export_host alone not shipped: calls %v", c)
				}
			}
		})
	}
	t.Run("malformed logs_export_host", func(t *testing.T) {
		r := newShipRig(t)
		if err := shipLogs(context.Background(), r.cfg, shipSpec(t, spec.AuditDisabled, "collector.cvc.local"), r.d, true, false); err != nil {
			t.Fatal(err)
		}
		if c := r.units.took(); len(c) != 0 {
			t.Errorf("calls %v with nothing to ship", c)
		}
		if !strings.Contains(r.logs.String(), "Postgres logs are not exported: logs_export_host is malformed") ||
			!strings.Contains(r.logs.String(), "no port") {
			t.Errorf("no clear log line:\n%s", r.logs)
		}
		// With audit, the audit is shipped and the bad export left out.
		if err := shipLogs(context.Background(), r.cfg, shipSpec(t, spec.AuditHipaa, "collector.cvc.local"), r.d, true, false); err != nil {
			t.Fatal(err)
		}
		if conf := r.conf(t); strings.Contains(conf, "imjournal") || !strings.Contains(conf, "imfile") {
			t.Errorf("config:\n%s", conf)
		}
	})
	t.Run("nothing to ship costs nothing", func(t *testing.T) {
		r := newShipRig(t)
		r.d.LogUnits = nil // not even asked
		if err := shipLogs(context.Background(), r.cfg, shipSpec(t, spec.AuditBase, ""), r.d, true, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(paths.RsyslogConfFile(r.cfg.StateDir)); err == nil {
			t.Error("a configuration without anything to ship")
		}
	})
}

// A start with a new PGDATA (neon mode) drops imfile's positions, named by inode, after
// stopping the unit (which writes them when it stops): a new audit file that reuses an
// old inode is read from its beginning. imjournal's position stays; a start that keeps
// PGDATA keeps both.
func TestShipLogsNewPGDataForgetsAuditPositions(t *testing.T) {
	r := newShipRig(t)
	work := r.cfg.RsyslogWorkDir
	for _, f := range []string{"imfile-state:1234:5678abcd", "imfile-state:99", "postgres.journal.state"} {
		if err := os.WriteFile(filepath.Join(work, f), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := shipSpec(t, spec.AuditHipaa, "collector.cvc.local:514")
	if err := shipLogs(context.Background(), r.cfg, s, r.d, true, false); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(work, "*")); len(m) != 3 {
		t.Errorf("a start that keeps PGDATA removed state files: left %v", m)
	}
	r.units.took()
	if err := shipLogs(context.Background(), r.cfg, s, r.d, true, true); err != nil {
		t.Fatal(err)
	}
	if c := r.units.took(); !sameCalls(c, "stop "+paths.UnitRsyslog, "restart "+paths.UnitRsyslog) {
		t.Errorf("calls %v, want a stop before the state files go, then the restart", c)
	}
	if m, _ := filepath.Glob(filepath.Join(work, "*")); len(m) != 1 || filepath.Base(m[0]) != "postgres.journal.state" {
		t.Errorf("left %v, want only imjournal's state", m)
	}
	// A failed stop fails an audited start (the positions could not be reset).
	r.units.stop = errors.New("job failed")
	if err := shipLogs(context.Background(), r.cfg, s, r.d, true, true); err == nil || !strings.Contains(err.Error(), "to reset the audit file positions: job failed") {
		t.Errorf("shipLogs = %v", err)
	}
}

// A reconfiguration restarts only for a change, stops the shipping a spec no longer asks
// for, and never fails.
func TestShipLogsAtReconfiguration(t *testing.T) {
	restart, stop := "restart "+paths.UnitRsyslog, "stop "+paths.UnitRsyslog
	r := newShipRig(t)
	// A change to a running shipping is checked by rsyslogd itself first.
	if _, err := os.Stat(paths.Rsyslogd); err != nil {
		t.Skipf("%s not installed (Debian package rsyslog): %v", paths.Rsyslogd, err)
	}
	r.cfg.Rsyslogd = paths.Rsyslogd
	ctx := context.Background()
	run := func(s *spec.ComputeSpec) {
		t.Helper()
		startLogShipping(ctx, r.cfg, r.d, s)()
	}
	run(shipSpec(t, spec.AuditDisabled, "a.example:514"))
	if c := r.units.took(); !sameCalls(c, restart) {
		t.Errorf("new export: calls %v", c)
	}
	run(shipSpec(t, spec.AuditDisabled, "a.example:514"))
	if c := r.units.took(); len(c) != 0 {
		t.Errorf("unchanged and running: calls %v", c)
	}
	r.units.state = "failed"
	run(shipSpec(t, spec.AuditDisabled, "a.example:514"))
	if c := r.units.took(); !sameCalls(c, restart) {
		t.Errorf("unchanged but not running: calls %v", c)
	}
	run(shipSpec(t, spec.AuditDisabled, "b.example:514"))
	if c := r.units.took(); !sameCalls(c, restart) || !strings.Contains(r.conf(t), `target="b.example"`) {
		t.Errorf("changed: calls %v", c)
	}
	// A compliance level at a reconfiguration starts no audit shipping: the start's
	// (none here) is kept, as compute_ctl.
	run(shipSpec(t, spec.AuditFull, "b.example:514"))
	if c := r.units.took(); len(c) != 0 || strings.Contains(r.conf(t), "imfile") {
		t.Errorf("audit level raised at a reconfiguration: calls %v, config:\n%s", c, r.conf(t))
	}
	// A configuration rsyslogd refuses (here: its work directory is missing) does not
	// replace the running one.
	work := r.cfg.RsyslogWorkDir
	r.cfg.RsyslogWorkDir = filepath.Join(work, "missing")
	run(shipSpec(t, spec.AuditDisabled, "e.example:514"))
	if c := r.units.took(); len(c) != 0 || !strings.Contains(r.conf(t), `target="b.example"`) {
		t.Errorf("refused configuration: calls %v, config:\n%s", c, r.conf(t))
	}
	if !strings.Contains(r.logs.String(), "log shipping left as it was: the new configuration is refused") ||
		!strings.Contains(r.logs.String(), "can not be accessed") {
		t.Errorf("no clear log line for the refused configuration:\n%s", r.logs)
	}
	if m, _ := filepath.Glob(paths.RsyslogConfFile(r.cfg.StateDir) + "*"); len(m) != 1 {
		t.Errorf("files left beside the configuration: %v", m)
	}
	r.cfg.RsyslogWorkDir = work
	// A unit that does not start is stopped (Restart= would try again and again).
	r.units.restart = errors.New("job failed")
	run(shipSpec(t, spec.AuditDisabled, "d.example:514"))
	if !strings.Contains(r.logs.String(), "log shipping not set up; the compute goes on") {
		t.Errorf("a failed restart is not logged:\n%s", r.logs)
	}
	if c := r.units.took(); !sameCalls(c, restart, stop) {
		t.Errorf("failed restart: calls %v, want the unit stopped after it", c)
	}
	r.units.restart = nil
	run(shipSpec(t, spec.AuditDisabled, ""))
	if c := r.units.took(); !sameCalls(c, stop) {
		t.Errorf("nothing to ship any more: calls %v", c)
	}
	if _, err := os.Stat(paths.RsyslogConfFile(r.cfg.StateDir)); err == nil {
		t.Error("the configuration is left behind")
	}
	run(shipSpec(t, spec.AuditDisabled, ""))
	if c := r.units.took(); len(c) != 0 {
		t.Errorf("still nothing: calls %v", c)
	}
}

// A reconfiguration leaves the audit shipping as the start set it up, whatever the new
// spec's audit level and ids (as compute_ctl): only logs_export_host changes apply, and a
// lowered level does not stop the unit with the audit files' tail unshipped.
func TestShipLogsReconfigurationKeepsAudit(t *testing.T) {
	if _, err := os.Stat(paths.Rsyslogd); err != nil {
		t.Skipf("%s not installed (Debian package rsyslog): %v", paths.Rsyslogd, err)
	}
	restart, stop := "restart "+paths.UnitRsyslog, "stop "+paths.UnitRsyslog
	r := newShipRig(t)
	r.cfg.Rsyslogd = paths.Rsyslogd
	ctx := context.Background()
	if err := shipLogs(ctx, r.cfg, shipSpec(t, spec.AuditHipaa, "a.example:514"), r.d, true, false); err != nil {
		t.Fatal(err)
	}
	r.units.took()
	audited := func(what string) {
		t.Helper()
		conf := r.conf(t)
		if !strings.Contains(conf, `module(load="imfile")`) || !strings.Contains(conf, `"ep-test-123"`) || !strings.Contains(conf, `target="collector.host.tld" port="5555"`) {
			t.Errorf("%s: the start's audit shipping is gone:\n%s", what, conf)
		}
	}
	other := shipSpec(t, spec.AuditDisabled, "b.example:514")
	ep := "ep-other-999"
	other.EndpointID = &ep
	startLogShipping(ctx, r.cfg, r.d, other)()
	if c := r.units.took(); !sameCalls(c, restart) || !strings.Contains(r.conf(t), `target="b.example"`) || strings.Contains(r.conf(t), ep) {
		t.Errorf("audit off, new export and id: calls %v, config:\n%s", c, r.conf(t))
	}
	audited("audit off, new export")
	// Nothing but the start's audit is left: the unit is restarted with it, not stopped.
	startLogShipping(ctx, r.cfg, r.d, shipSpec(t, spec.AuditDisabled, ""))()
	if c := r.units.took(); !sameCalls(c, restart) || strings.Contains(r.conf(t), "imjournal") {
		t.Errorf("export removed: calls %v, config:\n%s", c, r.conf(t))
	}
	audited("export removed")
	// The settings may have changed since: the start's endpoint stays.
	r.cfg.AuditEndpoint = ""
	startLogShipping(ctx, r.cfg, r.d, shipSpec(t, spec.AuditFull, ""))()
	if c := r.units.took(); len(c) != 0 {
		t.Errorf("unchanged: calls %v", c)
	}
	audited("settings changed")
	// The next start without audit forgets it.
	if err := shipLogs(ctx, r.cfg, shipSpec(t, spec.AuditDisabled, ""), r.d, true, false); err != nil {
		t.Fatal(err)
	}
	if c := r.units.took(); !sameCalls(c, stop) {
		t.Errorf("start without shipping: calls %v", c)
	}
	if _, err := os.Stat(paths.RsyslogAuditFile(r.cfg.StateDir)); err == nil {
		t.Error("the audit shipping of the earlier start is left behind")
	}
	startLogShipping(ctx, r.cfg, r.d, shipSpec(t, spec.AuditDisabled, "c.example:514"))()
	if c := r.units.took(); !sameCalls(c, restart) || strings.Contains(r.conf(t), "imfile") {
		t.Errorf("export after a start without audit: calls %v, config:\n%s", c, r.conf(t))
	}
}
