package compute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/rsyslog"
	"github.com/computetools/compute-tools/internal/spec"
)

// Log shipping (compute_ctl's rsyslog.rs): compute-rsyslog.service, our own rsyslog
// instance run as postgres, ships the compliance audit files (audit_log_level Hipaa,
// Extended or Full, to AUDIT_LOGGING_TLS_ENDPOINT or AUDIT_LOGGING_ENDPOINT) and
// Postgres's syslog lines (logs_export_host). The step that knows the spec renders its
// configuration (package rsyslog) into the state directory and restarts the unit through
// systemd: compute-init before Postgres starts, compute-configure at a reconfiguration.
//
// What fails the compute is what fails compute_ctl's start: with compliance audit, a
// missing or malformed endpoint, an id that cannot be rendered, rsyslogd (or, for TLS,
// its gtls driver) missing or a unit that does not start fail the start (a compute that must be audited does not run
// unaudited). Everything about logs_export_host (malformed, rsyslogd missing or down) is
// an error line and the compute goes on; compute_ctl fails the start and the
// reconfiguration there. A reconfiguration never fails for shipping and, as compute_ctl,
// leaves the audit shipping as the start set it up (recorded in
// paths.RsyslogAuditFile): only logs_export_host changes apply.

// LogUnits is the systemd side of the log shipping (*sysd.Manager).
type LogUnits interface {
	ActiveState(ctx context.Context, name string) (string, error)
	RestartUnit(ctx context.Context, name string) error
	StopUnit(ctx context.Context, name string) error
}

// Environment variables of the compliance audit receivers (compute_ctl's).
const (
	EnvAuditEndpoint    = "AUDIT_LOGGING_ENDPOINT"
	EnvAuditTLSEndpoint = "AUDIT_LOGGING_TLS_ENDPOINT"
)

// auditShipping is the audit part of the configuration for s: the TLS endpoint when
// set, else the plain one (compute_ctl's precedence).
func auditShipping(cfg Settings, s *spec.ComputeSpec) (*rsyslog.Audit, error) {
	ep, tls := cfg.AuditTLSEndpoint, true
	if ep == "" {
		ep, tls = cfg.AuditEndpoint, false
	}
	if ep == "" {
		return nil, fmt.Errorf("audit_log_level %s: %s and %s are both empty", s.AuditLogLevel, EnvAuditEndpoint, EnvAuditTLSEndpoint)
	}
	t, err := rsyslog.ParseTarget(ep)
	if err != nil {
		name := EnvAuditEndpoint
		if tls {
			name = EnvAuditTLSEndpoint
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	a := &rsyslog.Audit{LogDir: pgdata.Dir{Path: cfg.PGData}.LogDirPath(), Target: t, TLS: tls}
	if s.EndpointID != nil {
		a.EndpointID = *s.EndpointID
	}
	if s.ProjectID != nil {
		a.ProjectID = *s.ProjectID
	}
	for _, id := range []struct{ name, v string }{{"endpoint_id", a.EndpointID}, {"project_id", a.ProjectID}} {
		if !rsyslog.ValidID(id.v) {
			return nil, fmt.Errorf("%s %q cannot go into the audit lines: letters, digits, '.', '_' and '-' only", id.name, id.v)
		}
	}
	return a, nil
}

// shipLogs sets compute-rsyslog.service up for s. atStart: compute-init, before Postgres
// starts (the unit is always restarted: in neon mode PGDATA, whose log directory it
// watches, is new); otherwise a reconfiguration (restarted only when the configuration
// changed or the unit is not running). newPGData (at a start): PGDATA was created anew,
// so with audit imfile's positions in the old one's files are dropped
// (forgetAuditPositions; without audit imfile is not loaded, and the next audited start
// drops them).
// It returns an error only when the start must fail; everything else is logged.
func shipLogs(ctx context.Context, cfg Settings, s *spec.ComputeSpec, d *Deps, atStart, newPGData bool) error {
	log := d.logger().With("unit", paths.UnitRsyslog)
	conf := cfg.rsyslogConf()
	c := rsyslog.Config{WorkDir: cfg.rsyslogWorkDir()}
	if atStart {
		if s.AuditLogLevel.Compliance() {
			a, err := auditShipping(cfg, s)
			if err != nil {
				return fmt.Errorf("audit log shipping: %w", err)
			}
			c.Audit = a
		}
		if err := saveStartAudit(cfg, c.Audit); err != nil {
			return fmt.Errorf("audit log shipping: %w", err)
		}
	} else {
		// The audit shipping is the start's, whatever the new spec says (as compute_ctl).
		a, err := loadStartAudit(cfg)
		if err != nil {
			log.Error("log shipping left as it was: the audit shipping of the start is unknown", "err", err)
			return nil
		}
		c.Audit = a
	}
	audit := c.Audit != nil
	if s.LogsExportHost != nil {
		t, err := rsyslog.ParseTarget(*s.LogsExportHost)
		if err != nil {
			log.Error("Postgres logs are not exported: logs_export_host is malformed; the compute goes on", "err", err)
		} else {
			c.Postgres = &rsyslog.Postgres{Target: t, Unit: paths.UnitPostgres}
		}
	}
	if c.Audit == nil && c.Postgres == nil {
		stopShipping(ctx, conf, d, log)
		return nil
	}
	// problem fails the start of an audited compute, and is an error line otherwise.
	problem := func(err error) error {
		if audit && atStart {
			return fmt.Errorf("audit log shipping: %w", err)
		}
		log.Error("log shipping not set up; the compute goes on", "err", err)
		return nil
	}
	if _, err := os.Stat(cfg.rsyslogd()); err != nil {
		return problem(fmt.Errorf("rsyslogd is not installed (Debian package rsyslog): %w", err))
	}
	if c.Audit != nil && c.Audit.TLS && !cfg.hasGTLS() {
		return problem(fmt.Errorf("%s: TLS needs rsyslog's gtls driver (Debian package rsyslog-gnutls), which is not installed", EnvAuditTLSEndpoint))
	}
	if c.Audit != nil && c.Audit.TLS {
		ca, err := cfg.caFile()
		if err != nil {
			return problem(fmt.Errorf("%s: %w", EnvAuditTLSEndpoint, err))
		}
		c.Audit.CAFile = ca
	}
	text, err := rsyslog.Render(c)
	if err != nil {
		return problem(err)
	}
	if c.Audit != nil {
		if err := (pgdata.Dir{Path: cfg.PGData}).EnsureLogDir(); err != nil {
			return problem(err)
		}
	}
	if d.LogUnits == nil {
		return problem(fmt.Errorf("no connection to systemd to restart %s", paths.UnitRsyslog))
	}
	if !atStart {
		old, _ := os.ReadFile(conf)
		st, err := d.LogUnits.ActiveState(ctx, paths.UnitRsyslog)
		running := err == nil && st == "active"
		if running && bytes.Equal(old, []byte(text)) {
			log.Info("log shipping is up to date")
			return nil
		}
		if running {
			// The running shipping is replaced only by a configuration rsyslogd accepts.
			if err := replaceChecked(ctx, cfg.rsyslogd(), conf, text, log); err != nil {
				log.Error("log shipping left as it was: the new configuration is refused", "err", err)
				return nil
			}
		} else if err := atomicfile.Write(conf, []byte(text), atomicfile.Options{Mode: 0o640}); err != nil {
			return problem(fmt.Errorf("write %s: %w", conf, err))
		}
	} else if err := atomicfile.Write(conf, []byte(text), atomicfile.Options{Mode: 0o640}); err != nil {
		return problem(fmt.Errorf("write %s: %w", conf, err))
	}
	if atStart && newPGData && c.Audit != nil {
		if err := forgetAuditPositions(ctx, c.WorkDir, d.LogUnits); err != nil {
			return problem(err)
		}
	}
	if err := d.LogUnits.RestartUnit(ctx, paths.UnitRsyslog); err != nil {
		// Restart=on-failure would try again and again (up to the start limit): a unit
		// that did not start is stopped, and the next start or reconfiguration tries.
		if serr := d.LogUnits.StopUnit(ctx, paths.UnitRsyslog); serr != nil {
			log.Warn("could not stop the unit that failed to start", "err", serr)
		}
		return problem(fmt.Errorf("restart %s (journalctl -u %s says why): %w", paths.UnitRsyslog, paths.UnitRsyslog, err))
	}
	attrs := []any{"config", conf}
	if c.Audit != nil {
		attrs = append(attrs, "audit_endpoint", c.Audit.Target.String(), "audit_tls", c.Audit.TLS)
	}
	if c.Postgres != nil {
		attrs = append(attrs, "logs_export_host", c.Postgres.Target.String())
	}
	log.Info("log shipping started", attrs...)
	return nil
}

// stopShipping stops compute-rsyslog.service and removes its configuration when an
// earlier spec shipped logs and this one ships none. Without a configuration file there
// is nothing to stop, and systemd is not asked (the common start costs nothing).
func stopShipping(ctx context.Context, conf string, d *Deps, log *slog.Logger) {
	if _, err := os.Stat(conf); errors.Is(err, fs.ErrNotExist) {
		return
	}
	if d.LogUnits == nil {
		log.Warn("no connection to systemd: compute-rsyslog.service is left as it is")
		return
	}
	if err := d.LogUnits.StopUnit(ctx, paths.UnitRsyslog); err != nil {
		log.Error("could not stop the log shipping; the compute goes on", "err", err)
		return
	}
	if err := os.Remove(conf); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("could not remove the log shipping configuration", "err", err)
	}
	log.Info("log shipping stopped: the spec ships no logs")
}

// replaceChecked replaces conf by text only when `rsyslogd -N1` accepts text, checked in
// a file beside conf: a configuration that passes no longer fails the unit's own check
// (ExecStartPre), so a reconfiguration cannot stop a working shipping for a bad one.
func replaceChecked(ctx context.Context, rsyslogd, conf, text string, log *slog.Logger) error {
	check := conf + ".new"
	if err := atomicfile.Write(check, []byte(text), atomicfile.Options{Mode: 0o640}); err != nil {
		return fmt.Errorf("write %s: %w", check, err)
	}
	if _, err := execx.Run(ctx, execx.Cmd{Path: rsyslogd, Args: []string{"-N1", "-f", check}, Log: log}); err != nil {
		if rerr := os.Remove(check); rerr != nil {
			log.Warn("could not remove the refused configuration", "file", check, "err", rerr)
		}
		return err
	}
	if err := os.Rename(check, conf); err != nil {
		return fmt.Errorf("replace %s: %w", conf, err)
	}
	return nil
}

// forgetAuditPositions stops compute-rsyslog.service (imfile writes its positions when
// it stops) and removes imfile's state files from its work directory. They are named by
// inode: after a new PGDATA, a new audit file that reuses an old file's inode would be
// read from the old file's offset, and its first records lost. imjournal's state stays
// (the journal is the same across lifecycles).
func forgetAuditPositions(ctx context.Context, workDir string, u LogUnits) error {
	if err := u.StopUnit(ctx, paths.UnitRsyslog); err != nil {
		return fmt.Errorf("stop %s to reset the audit file positions: %w", paths.UnitRsyslog, err)
	}
	states, err := filepath.Glob(filepath.Join(workDir, rsyslog.ImfileStatePattern))
	if err != nil {
		return fmt.Errorf("audit file positions: %w", err)
	}
	for _, f := range states {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the old audit file position: %w", err)
		}
	}
	return nil
}

// saveStartAudit records the audit shipping a start set up (none: the file removed), for
// the reconfigurations of this lifecycle.
func saveStartAudit(cfg Settings, a *rsyslog.Audit) error {
	f := paths.RsyslogAuditFile(cfg.StateDir)
	if a == nil {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode the audit shipping: %w", err)
	}
	if err := atomicfile.Write(f, b, atomicfile.Options{Mode: 0o640}); err != nil {
		return fmt.Errorf("write %s: %w", f, err)
	}
	return nil
}

// loadStartAudit is the audit shipping the start set up (nil: none).
func loadStartAudit(cfg Settings) (*rsyslog.Audit, error) {
	f := paths.RsyslogAuditFile(cfg.StateDir)
	b, err := os.ReadFile(f)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var a rsyslog.Audit
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return &a, nil
}

// startLogShipping runs shipLogs for a reconfiguration in the background; wait returns
// when it is done. Without logs_export_host and without a configuration (neither the
// start nor an earlier reconfiguration shipped anything) there is nothing to do.
func startLogShipping(ctx context.Context, cfg Settings, d *Deps, s *spec.ComputeSpec) (wait func()) {
	if s.LogsExportHost == nil {
		if _, err := os.Stat(cfg.rsyslogConf()); errors.Is(err, fs.ErrNotExist) {
			return func() {}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = shipLogs(ctx, cfg, s, d, false, false) // a reconfiguration: errors are logged only
	}()
	return func() { <-done }
}

// hasGTLS reports whether rsyslog's TLS driver is installed.
func (cfg Settings) hasGTLS() bool {
	globs := paths.RsyslogGTLSDriver
	if cfg.RsyslogGTLS != "" {
		globs = []string{cfg.RsyslogGTLS}
	}
	for _, g := range globs {
		if m, _ := filepath.Glob(g); len(m) > 0 {
			return true
		}
	}
	return false
}

// caFile is the CA bundle that checks the TLS audit receiver: the first of
// paths.RsyslogCAFiles (or cfg.RsyslogCAFiles) that exists.
func (cfg Settings) caFile() (string, error) {
	files := paths.RsyslogCAFiles
	if len(cfg.RsyslogCAFiles) > 0 {
		files = cfg.RsyslogCAFiles
	}
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return f, nil
		}
	}
	return "", fmt.Errorf("TLS needs the system's CA bundle (package ca-certificates), and none of %s exists", strings.Join(files, ", "))
}

// rsyslogConf is the configuration file of compute-rsyslog.service.
func (cfg Settings) rsyslogConf() string { return paths.RsyslogConfFile(cfg.StateDir) }

// rsyslogWorkDir is compute-rsyslog.service's work directory (its StateDirectory=).
func (cfg Settings) rsyslogWorkDir() string {
	if cfg.RsyslogWorkDir != "" {
		return cfg.RsyslogWorkDir
	}
	return paths.RsyslogWorkDir
}

// rsyslogd is the rsyslog binary the unit runs.
func (cfg Settings) rsyslogd() string {
	if cfg.Rsyslogd != "" {
		return cfg.Rsyslogd
	}
	return paths.Rsyslogd
}
