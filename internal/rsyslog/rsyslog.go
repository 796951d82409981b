// Package rsyslog renders the configuration of the compute's own rsyslog instance,
// compute-rsyslog.service, which ships two kinds of logs off the compute, as Neon's
// compute_ctl does with the VM's rsyslogd (compute_tools/src/rsyslog.rs at the reference):
//
//   - the compliance audit (audit_log_level Hipaa, Extended or Full): the files
//     pgauditlogtofile writes into PGDATA/log, read with imfile and forwarded over TCP
//     (TLS with AUDIT_LOGGING_TLS_ENDPOINT) as RFC 5424 lines whose message is a JSON
//     object with the endpoint and project ids (compute_ctl's template);
//   - Postgres's own log (logs_export_host): the lines Postgres sends to syslog
//     (log_destination='stderr,syslog', written by package pgconf), which journald
//     stores under compute-postgres.service and imjournal reads back here, forwarded
//     over TCP in RFC 5424 (RSYSLOG_SyslogProtocol23Format, as compute_ctl).
//
// The configuration is code (rsyslog can run programs), so nothing is rendered into it
// that has not been validated against a strict grammar first: host:port targets
// (ParseTarget: a DNS name, an IPv4 address or a bracketed IPv6 address, and a port),
// ids (ValidID) and paths (validPath). Every value is then written inside double quotes,
// where none of the allowed characters needs an escape.
//
// Differences from the reference: compute_ctl writes /etc/rsyslog.d/*.conf as root and
// restarts the system rsyslogd with pkill; here the whole configuration is one file
// that compute-rsyslog.service runs (as postgres) and systemd restarts. Postgres's syslog
// lines come from the journal (imjournal, filtered to the Postgres unit's syslog
// transport) instead of /dev/log, which systemd's journald owns. The inputs are bound to
// their own rulesets, so nothing else that rsyslog reads is forwarded. The package only
// renders and validates: the caller writes the file and restarts the unit.
package rsyslog

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Target is a syslog receiver: a host (a DNS name, an IPv4 address, or an IPv6 address
// without brackets) and a TCP port.
type Target struct {
	Host string
	Port int
}

// String is the target as host:port, with an IPv6 address in brackets.
func (t Target) String() string {
	if strings.Contains(t.Host, ":") {
		return "[" + t.Host + "]:" + strconv.Itoa(t.Port)
	}
	return t.Host + ":" + strconv.Itoa(t.Port)
}

var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ParseTarget parses host:port strictly: host is a DNS name (labels of letters, digits
// and inner hyphens, at most 253 characters, the last label not all digits), an IPv4
// address, or an IPv6 address in brackets (no zone); port is decimal, 1 to 65535.
// Anything else (a scheme, a path, a user, spaces, quotes) is an error that quotes s.
func ParseTarget(s string) (Target, error) {
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("%q is not host:port: %s", s, why)
	}
	var host, port string
	if rest, ok := strings.CutPrefix(s, "["); ok {
		h, p, ok := strings.Cut(rest, "]:")
		if !ok {
			return bad("an IPv6 address is written [address]:port")
		}
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" || a.Is4In6() {
			return bad("not an IPv6 address in brackets")
		}
		host, port = a.String(), p
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return bad("no port")
		}
		host, port = s[:i], s[i+1:]
		if err := checkHost(host); err != nil {
			return bad(err.Error())
		}
	}
	if port == "" || strings.TrimLeft(port, "0123456789") != "" || len(port) > 5 {
		return bad("the port is not a number")
	}
	n, _ := strconv.Atoi(port)
	if n < 1 || n > 65535 {
		return bad("the port is not between 1 and 65535")
	}
	return Target{Host: host, Port: n}, nil
}

func checkHost(h string) error {
	if h == "" {
		return errors.New("no host")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if !a.Is4() {
			return errors.New("an IPv6 address must be in brackets")
		}
		return nil
	}
	if len(h) > 253 {
		return errors.New("the host name is longer than 253 characters")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return errors.New("not a host name or an IP address")
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("not a host name or an IP address")
	}
	return nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID reports whether id may be rendered as an endpoint or project id: empty (the
// spec has none; compute_ctl renders "" too), or up to 128 letters, digits, dots,
// underscores and hyphens, starting with a letter or digit (Neon's ids are such as
// ep-cool-darkness-123456).
func ValidID(id string) bool { return id == "" || idRe.MatchString(id) }

var pathRe = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+/?$`)

// validPath reports whether p is an absolute path of plain characters (no quotes,
// backslashes, spaces, globs or variables).
func validPath(p string) bool {
	return pathRe.MatchString(p) && !strings.Contains(p, "/../") && !strings.HasSuffix(p, "/..")
}

// Config is what compute-rsyslog.service ships. At least one of Audit and Postgres is
// set (Render refuses an empty Config: with nothing to ship the unit is stopped).
type Config struct {
	// WorkDir is rsyslog's work directory: the positions imfile and imjournal have
	// reached, kept across restarts (the unit's StateDirectory=).
	WorkDir  string
	Audit    *Audit
	Postgres *Postgres
}

// Audit is the compliance audit shipping.
type Audit struct {
	// LogDir is where pgauditlogtofile writes (PGDATA/log); every *.log file in it is
	// forwarded, as compute_ctl.
	LogDir string
	Target Target
	// TLS sends over TLS (gtls, the certificate checked against CAFile and the target's
	// name): AUDIT_LOGGING_TLS_ENDPOINT.
	TLS    bool
	CAFile string
	// EndpointID and ProjectID go into every line (ValidID).
	EndpointID, ProjectID string
}

// Postgres is the logs_export_host forwarding of Postgres's syslog lines.
type Postgres struct {
	Target Target
	// Unit is the Postgres unit whose syslog lines are read from the journal.
	Unit string
	// Socket, when set, reads the lines from an imuxsock socket at this path instead
	// of the journal (a host without journald; the tests).
	Socket string
}

// ImfileStatePattern matches the state files imfile keeps in the work directory, one per
// file read, named by the file's inode: the caller removes them when the files they
// describe are gone (a new PGDATA), since a new file may reuse an old one's inode.
const ImfileStatePattern = "imfile-state:*"

// Ruleset names: each input is bound to its own, so nothing else rsyslog reads is forwarded.
const (
	auditRuleset    = "compute_audit"
	postgresRuleset = "compute_postgres_logs"
)

var unitRe = regexp.MustCompile(`^[A-Za-z0-9:_.@-]+\.service$`)

// Render returns the text of the configuration file, or an error naming the value that
// failed validation.
func Render(c Config) (string, error) {
	if c.Audit == nil && c.Postgres == nil {
		return "", errors.New("rsyslog: nothing to ship")
	}
	if !validPath(c.WorkDir) {
		return "", fmt.Errorf("rsyslog: work directory %q is not a plain absolute path", c.WorkDir)
	}
	var b strings.Builder
	w := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	w("# compute-rsyslog.service: rendered by compute-tools (compute-init at a start,")
	w("# compute-configure at a reconfiguration) from the spec and the settings file.")
	w("# Do not edit: it is rewritten at every start.")
	if c.Audit != nil && c.Audit.TLS {
		if !validPath(c.Audit.CAFile) {
			return "", fmt.Errorf("rsyslog: CA file %q is not a plain absolute path", c.Audit.CAFile)
		}
		w(`global(workDirectory="%s" DefaultNetstreamDriverCAFile="%s")`, c.WorkDir, c.Audit.CAFile)
	} else {
		w(`global(workDirectory="%s")`, c.WorkDir)
	}
	if a := c.Audit; a != nil {
		if err := renderAudit(w, a); err != nil {
			return "", err
		}
	}
	if p := c.Postgres; p != nil {
		if err := renderPostgres(w, p); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

func checkTarget(t Target, what string) error {
	if _, err := ParseTarget(t.String()); err != nil {
		return fmt.Errorf("rsyslog: %s: %w", what, err)
	}
	return nil
}

// auditReadTimeout (seconds) sends a file's last record when nothing follows it for that
// long: without it imfile holds the record back until the next one starts (compute_ctl's
// template has none, so the last record of each file waits, forever for the last file).
const auditReadTimeout = 2

// auditStart is the first line of a pgauditlogtofile record ("2025-01-02 03:04:05.678
// GMT,"): a line that does not start so continues the record before it.
const auditStart = `^[[:digit:]]{4}-[[:digit:]]{2}-[[:digit:]]{2} [[:digit:]]{2}:[[:digit:]]{2}:[[:digit:]]{2}.[[:digit:]]{3} GMT,`

func renderAudit(w func(string, ...any), a *Audit) error {
	if err := checkTarget(a.Target, "audit endpoint"); err != nil {
		return err
	}
	if !validPath(a.LogDir) {
		return fmt.Errorf("rsyslog: audit log directory %q is not a plain absolute path", a.LogDir)
	}
	for _, id := range []struct{ name, v string }{{"endpoint_id", a.EndpointID}, {"project_id", a.ProjectID}} {
		if !ValidID(id.v) {
			return fmt.Errorf("rsyslog: %s %q: want letters, digits, '.', '_' and '-' only (at most 128)", id.name, id.v)
		}
	}
	w("")
	w("# Compliance audit: pgaudit's log files, with the endpoint and project ids.")
	w(`template(name="ComputeAuditLog" type="string"`)
	w(`  string="<%%PRI%%>1 %%TIMESTAMP:::date-rfc3339%% %%HOSTNAME%% - - - - %%$.json_log%%")`)
	w(`ruleset(name="%s") {`, auditRuleset)
	w(`  set $.json_log!endpoint_id = "%s";`, a.EndpointID)
	w(`  set $.json_log!project_id = "%s";`, a.ProjectID)
	w(`  set $.json_log!msg = $msg;`)
	w(`  action(type="omfwd" target="%s" port="%d" protocol="tcp" template="ComputeAuditLog"`, a.Target.Host, a.Target.Port)
	w(`    queue.type="linkedList" queue.size="1000" action.resumeRetryCount="10"`)
	if a.TLS {
		w(`    StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"`)
		w(`    StreamDriverPermittedPeers="%s"`, a.Target.Host)
		w(`    StreamDriver.CheckExtendedKeyPurpose="on" StreamDriver.PermitExpiredCerts="off"`)
	}
	w(`  )`)
	w(`}`)
	w(`module(load="imfile")`)
	w(`input(type="imfile" File="%s/*.log" Tag="pgaudit_log" Severity="info" Facility="local5"`, strings.TrimSuffix(a.LogDir, "/"))
	w(`  startmsg.regex="%s"`, auditStart)
	w(`  readTimeout="%d" ruleset="%s")`, auditReadTimeout, auditRuleset)
	return nil
}

func renderPostgres(w func(string, ...any), p *Postgres) error {
	if err := checkTarget(p.Target, "logs_export_host"); err != nil {
		return err
	}
	w("")
	w("# logs_export_host: Postgres's syslog lines (ident postgres), in RFC 5424.")
	w(`ruleset(name="%s") {`, postgresRuleset)
	w(`  if $programname == "postgres" then {`)
	w(`    action(type="omfwd" target="%s" port="%d" protocol="tcp" template="RSYSLOG_SyslogProtocol23Format"`, p.Target.Host, p.Target.Port)
	w(`      action.resumeRetryCount="3" queue.type="linkedList" queue.size="1000")`)
	w(`  }`)
	w(`}`)
	if p.Socket != "" {
		if !validPath(p.Socket) {
			return fmt.Errorf("rsyslog: socket %q is not a plain absolute path", p.Socket)
		}
		w(`module(load="imuxsock" SysSock.Use="off")`)
		w(`input(type="imuxsock" Socket="%s" ruleset="%s")`, p.Socket, postgresRuleset)
		return nil
	}
	if !unitRe.MatchString(p.Unit) {
		return fmt.Errorf("rsyslog: %q is not a service unit name", p.Unit)
	}
	// Only entries that Postgres itself sent to syslog, from its unit: not the copy of
	// its stderr (the stdout transport), not other units.
	w(`module(load="imjournal" StateFile="postgres.journal.state" IgnorePreviousMessages="on"`)
	w(`  Ratelimit.Interval="0")`)
	w(`if $inputname == "imjournal" and $!_SYSTEMD_UNIT == "%s" and $!_TRANSPORT == "syslog" then {`, p.Unit)
	w(`  call %s`, postgresRuleset)
	w(`}`)
	return nil
}
