package rsyslog

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	good := []struct {
		in   string
		want Target
		str  string
	}{
		{"collector.host.tld:5555", Target{"collector.host.tld", 5555}, "collector.host.tld:5555"},
		{"10.0.0.1:5555", Target{"10.0.0.1", 5555}, "10.0.0.1:5555"},
		{"[7e60:82ed:cb2e:d617:f904:f395:aaca:e252]:5555", Target{"7e60:82ed:cb2e:d617:f904:f395:aaca:e252", 5555}, "[7e60:82ed:cb2e:d617:f904:f395:aaca:e252]:5555"},
		{"[::1]:514", Target{"::1", 514}, "[::1]:514"},
		{"localhost:1", Target{"localhost", 1}, "localhost:1"},
		{"collector.cvc.local:65535", Target{"collector.cvc.local", 65535}, "collector.cvc.local:65535"},
		{"a-b.c9:10514", Target{"a-b.c9", 10514}, "a-b.c9:10514"},
	}
	for _, c := range good {
		got, err := ParseTarget(c.in)
		if err != nil || got != c.want || got.String() != c.str {
			t.Errorf("ParseTarget(%q) = %+v (%q), %v; want %+v", c.in, got, got.String(), err, c.want)
		}
	}
	bad := []string{
		"", "collector.host.tld", ":5555", "collector.host.tld:90001", "collector.host.tld:0",
		"-collector.host.tld:5555", "collector.host.tld:::5555", "collector-.tld:1", "a..b:1",
		"invalid", "host:port", "host:+514", "host:-1", "host: 514", " host:514", "host:514 ",
		"7e60:82ed::1:514", "[fe80::1%eth0]:514", "[::ffff:10.0.0.1]:514", "[::1]514", "[10.0.0.1]:514",
		"1.2.3:514", "999.1.1.1:514", "http://collector:514", "user@collector:514", "collector/x:514",
		`collector" port="1" x="`, "collector\n:514", `coll\ector:514`, "coll$ector:514", "collector:514\n",
		strings.Repeat("a", 64) + ".tld:514", strings.Repeat("abcdefgh.", 29) + "tld:514",
	}
	for _, in := range bad {
		if got, err := ParseTarget(in); err == nil {
			t.Errorf("ParseTarget(%q) = %+v, want an error", in, got)
		} else if !strings.Contains(err.Error(), "is not host:port") {
			t.Errorf("ParseTarget(%q): %v does not say what it wants", in, err)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"", "ep-cool-darkness-123456", "cool-darkness-123456", "ep_1.x", "A"} {
		if !ValidID(id) {
			t.Errorf("ValidID(%q) = false", id)
		}
	}
	for _, id := range []string{"-ep", ".x", `ep"x`, `ep\x`, "ep x", "ep$x", "ep;x", "ep\nx", "ép", strings.Repeat("a", 129), "{x}"} {
		if ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
	}
}

func auditConf() *Audit {
	return &Audit{LogDir: "/var/db/postgres/compute/log", Target: Target{"collector.host.tld", 5555},
		CAFile: "/etc/ssl/certs/ca-certificates.crt", EndpointID: "ep-test-endpoint-id", ProjectID: "test-project-id"}
}

func TestRenderAudit(t *testing.T) {
	text, err := Render(Config{WorkDir: "/var/lib/compute-rsyslog", Audit: auditConf()})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`global(workDirectory="/var/lib/compute-rsyslog")`,
		`module(load="imfile")`,
		`input(type="imfile" File="/var/db/postgres/compute/log/*.log" Tag="pgaudit_log" Severity="info" Facility="local5"`,
		`ruleset="compute_audit")`,
		`string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% - - - - %$.json_log%")`,
		`set $.json_log!endpoint_id = "ep-test-endpoint-id";`,
		`set $.json_log!project_id = "test-project-id";`,
		`action(type="omfwd" target="collector.host.tld" port="5555" protocol="tcp" template="ComputeAuditLog"`,
		`action.resumeRetryCount="10"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered audit config lacks %s:\n%s", want, text)
		}
	}
	for _, not := range []string{"gtls", "imjournal", "DefaultNetstreamDriverCAFile", "imuxsock"} {
		if strings.Contains(text, not) {
			t.Errorf("plain audit config has %s:\n%s", not, text)
		}
	}
	a := auditConf()
	a.TLS = true
	text, err = Render(Config{WorkDir: "/var/lib/compute-rsyslog", Audit: a})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`global(workDirectory="/var/lib/compute-rsyslog" DefaultNetstreamDriverCAFile="/etc/ssl/certs/ca-certificates.crt")`,
		`StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"`,
		`StreamDriverPermittedPeers="collector.host.tld"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered TLS audit config lacks %s:\n%s", want, text)
		}
	}
}

func TestRenderPostgres(t *testing.T) {
	text, err := Render(Config{WorkDir: "/var/lib/compute-rsyslog",
		Postgres: &Postgres{Target: Target{"collector.cvc.local", 514}, Unit: "compute-postgres.service"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`module(load="imjournal" StateFile="postgres.journal.state" IgnorePreviousMessages="on"`,
		`if $inputname == "imjournal" and $!_SYSTEMD_UNIT == "compute-postgres.service" and $!_TRANSPORT == "syslog" then {`,
		`if $programname == "postgres" then {`,
		`action(type="omfwd" target="collector.cvc.local" port="514" protocol="tcp" template="RSYSLOG_SyslogProtocol23Format"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered logs export config lacks %s:\n%s", want, text)
		}
	}
	// The ruleset is defined before it is called.
	if strings.Index(text, `ruleset(name="compute_postgres_logs")`) > strings.Index(text, "call compute_postgres_logs") {
		t.Errorf("ruleset called before it is defined:\n%s", text)
	}
	if strings.Contains(text, "imfile") {
		t.Errorf("logs export alone loads imfile:\n%s", text)
	}
}

// Every value that reaches the text is validated: what fails names the value.
func TestRenderRefuses(t *testing.T) {
	pg := func(t Target, unit string) *Postgres { return &Postgres{Target: t, Unit: unit} }
	audit := func(change func(*Audit)) *Audit { a := auditConf(); change(a); return a }
	cases := []struct {
		name string
		c    Config
		want string
	}{
		{"nothing", Config{WorkDir: "/w"}, "nothing to ship"},
		{"work dir", Config{WorkDir: `/w"x`, Audit: auditConf()}, "work directory"},
		{"relative work dir", Config{WorkDir: "w", Audit: auditConf()}, "work directory"},
		{"log dir", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.LogDir = "/a/*/b" })}, "audit log directory"},
		{"log dir dots", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.LogDir = "/a/../b" })}, "audit log directory"},
		{"endpoint id", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.EndpointID = `ep"; action(type="omprog" binary="/bin/sh")` })}, "endpoint_id"},
		{"project id", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.ProjectID = "p\\x" })}, "project_id"},
		{"audit host", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.Target.Host = `h" x="` })}, "audit endpoint"},
		{"audit port", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.Target.Port = 0 })}, "audit endpoint"},
		{"ca file", Config{WorkDir: "/w", Audit: audit(func(a *Audit) { a.TLS = true; a.CAFile = "" })}, "CA file"},
		{"export host", Config{WorkDir: "/w", Postgres: pg(Target{"a b", 514}, "compute-postgres.service")}, "logs_export_host"},
		{"unit", Config{WorkDir: "/w", Postgres: pg(Target{"h", 514}, `x" or 1 == 1`)}, "service unit"},
		{"socket", Config{WorkDir: "/w", Postgres: &Postgres{Target: Target{"h", 514}, Socket: "rel/sock"}}, "socket"},
	}
	for _, c := range cases {
		if text, err := Render(c.c); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Render = %v, want an error about %s\n%s", c.name, err, c.want, text)
		}
	}
}
