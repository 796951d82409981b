package pgconf

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func parsed(t *testing.T, js string) *spec.Parsed {
	t.Helper()
	s, err := spec.ParseSpec([]byte(js))
	if err != nil {
		t.Fatalf("ParseSpec: %v", err)
	}
	p, err := spec.Parse(s)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

const neonIDs = `"tenant_id": "0123456789abcdef0123456789abcdef",
  "timeline_id": "fedcba9876543210fedcba9876543210",
  "pageserver_connstring": "postgresql://no_user@ps-0:6400,postgresql://no_user@ps-1:6400"`

func specWith(fields string) string {
	return `{"format_version": 1, "suspend_timeout_seconds": -1,
  "cluster": {"roles": [], "databases": [], "settings": [
    {"name": "shared_preload_libraries", "value": "neon,pg_stat_statements", "vartype": "string"},
    {"name": "max_connections", "value": "100", "vartype": "integer"}]}` + fields + `}`
}

// testFiles are the PGDATA file names package pgdata passes in.
var testFiles = Files{TempOverride: "compute_ctl_temp_override.conf", ServerCert: "server.crt", ServerKey: "server.key"}

var hostOpts = Options{Port: 55432, SocketDir: "/run/compute-postgres", ListenAddresses: "*", InternalHTTPPort: 3081, PrivilegedRoleName: "neon_superuser"}

func TestPostgresqlConfGolden(t *testing.T) {
	tests := []struct {
		name string
		spec string
		opts Options
	}{
		{"standalone_primary", specWith(``), hostOpts},
		{"neon_primary", specWith(`, ` + neonIDs + `,
  "safekeeper_connstrings": ["sk-1:5454", "sk-2:5454", "sk-3:5454"],
  "safekeepers_generation": 12,
  "shard_stripe_size": 2048,
  "project_id": "proj-1", "branch_id": "br-1", "endpoint_id": "ep-1",
  "drop_subscriptions_before_start": true,
  "logs_export_host": "logs:10514"`), hostOpts},
		// Two shards need a stripe size (Neon main's legacy conversion refuses them without).
		{"neon_primary_no_generation", specWith(`, ` + neonIDs + `, "shard_stripe_size": 2048, "safekeeper_connstrings": ["sk-1:5454"]`), Options{}},
		{"static", specWith(`, ` + neonIDs + `, "shard_stripe_size": 2048, "mode": {"Static": "0/169AD58"}`), hostOpts},
		{"replica", specWith(`, ` + neonIDs + `, "shard_stripe_size": 2048, "mode": "Replica"`), hostOpts},
		{"audit_log", specWith(`, "audit_log_level": "Log"`), hostOpts},
		{"audit_base", specWith(`, "audit_log_level": "Base"`), hostOpts},
		{"audit_hipaa", specWith(`, "audit_log_level": "Hipaa"`), hostOpts},
		{"audit_extended", specWith(`, "audit_log_level": "Extended"`), hostOpts},
		{"audit_full", specWith(`, "audit_log_level": "Full"`), hostOpts},
		// No shared_preload_libraries at all: Neon's fallback list.
		{"audit_full_no_libs", `{"format_version": 1, "suspend_timeout_seconds": 1, "audit_log_level": "Full",
		  "cluster": {"roles": [], "databases": [], "settings": null}}`, hostOpts},
		// pgauditlogtofile present but pgaudit missing: Neon's substring test would not add
		// pgaudit; we do.
		{"audit_extended_logtofile_only", `{"format_version": 1, "suspend_timeout_seconds": 1, "audit_log_level": "Extended",
		  "cluster": {"roles": [], "databases": [], "settings": [
		    {"name": "shared_preload_libraries", "value": "neon,pgauditlogtofile", "vartype": "string"}]}}`, hostOpts},
		{"tls", specWith(``), Options{Port: 5432, TLS: true}},
		{"overcommit2", specWith(``), Options{OvercommitMemory2: true, InternalHTTPPort: 4000, PrivilegedRoleName: "it's_priv"}},
		{"settings_quoting", `{"format_version": 1, "suspend_timeout_seconds": 1,
		  "cluster": {"roles": [], "databases": [],
		    "postgresql_conf": "# from the spec\nshared_buffers = 64MB\nport = 6543",
		    "settings": [
		      {"name": "test.escaping", "value": "here's a backslash \\ and a quote ' and a double-quote \" hooray", "vartype": "string"},
		      {"name": "search_path", "value": "\"$user\", public", "vartype": "string"},
		      {"name": "log_line_prefix", "value": "", "vartype": "string"},
		      {"name": "work_mem", "value": "4MB", "vartype": "integer"},
		      {"name": "wal_level", "value": "logical", "vartype": "enum"},
		      {"name": "jit", "vartype": "bool"}
		    ]}}`, hostOpts},
		{"settings_empty_list", `{"format_version": 1, "suspend_timeout_seconds": 1,
		  "cluster": {"roles": [], "databases": [], "settings": []}}`, Options{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Files = testFiles
			golden(t, tc.name+".conf", PostgresqlConf(parsed(t, tc.spec), opts))
		})
	}
}

// TestPostgresqlConfOrder checks the §5.1 order on the richest case independently of
// the golden files, so that an -update cannot quietly bless a reordering.
func TestPostgresqlConfOrder(t *testing.T) {
	p := parsed(t, `{"format_version": 1, "suspend_timeout_seconds": -1, "audit_log_level": "Full",
  "cluster": {"roles": [], "databases": [], "postgresql_conf": "from_spec_conf = 1",
    "settings": [{"name": "from_settings", "value": "1", "vartype": "integer"}]},
  `+neonIDs+`, "safekeeper_connstrings": ["a:1"], "shard_stripe_size": 8, "project_id": "p",
  "branch_id": "b", "endpoint_id": "e", "mode": {"Static": "1/2"}, "logs_export_host": "h:1"}`)
	conf := PostgresqlConf(p, Options{Port: 1, SocketDir: "/s", ListenAddresses: "a", TLS: true, OvercommitMemory2: true, Files: testFiles})
	order := []string{
		"listen_addresses = 'a'\n", "port = 1\n", "unix_socket_directories = '/s'\n",
		"from_spec_conf = 1\n",
		"neon.stripe_size=8\n",
		"# Neon storage settings\n",
		"neon.pageserver_connstring='postgresql://no_user@ps-0:6400,postgresql://no_user@ps-1:6400'\n",
		"neon.safekeepers='a:1'\n",
		"neon.tenant_id='0123456789abcdef0123456789abcdef'\n",
		"neon.timeline_id='fedcba9876543210fedcba9876543210'\n",
		"neon.project_id='p'\n", "neon.branch_id='b'\n", "neon.endpoint_id='e'\n",
		"ssl = on\n", "ssl_cert_file = 'server.crt'\n", "ssl_key_file = 'server.key'\n",
		"lc_messages='C.UTF-8'\n", "lc_monetary='C.UTF-8'\n", "lc_time='C.UTF-8'\n", "lc_numeric='C.UTF-8'\n",
		"neon.compute_mode=static\n", "hot_standby=on\n", "recovery_target_lsn='1/2'\n",
		"dynamic_shared_memory_type = mmap\n",
		"neon.privileged_role_name='neon_superuser'\n",
		"# Managed by compute_ctl: begin\n", "from_settings = 1\n", "# Managed by compute_ctl: end\n",
		"# Managed by compute_ctl compliance audit settings: begin\n", "pgaudit.log_parameter=on\n", "pgaudit.log='all'\n",
		"pgaudit.log_catalog=off\n", "pgaudit.log_rotation_age=5\n", "shared_preload_libraries='neon,pgaudit,pgauditlogtofile'\n",
		"# Managed by compute_ctl compliance audit settings: end\n",
		"neon.extension_server_port=3081\n",
		"neon.disable_logical_replication_subscribers=false\n",
		"log_destination='stderr,syslog'\n",
		"include_if_exists = 'compute_ctl_temp_override.conf'\n",
	}
	rest := conf
	for _, want := range order {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("%q missing or out of order in\n%s", want, conf)
		}
		rest = rest[i+len(want):]
	}
	if rest != "" {
		t.Errorf("the temp override include is not last; trailing text %q", rest)
	}
}

func TestPostgresqlConfOmissions(t *testing.T) {
	conf := PostgresqlConf(parsed(t, `{"format_version": 1, "suspend_timeout_seconds": 1,
	  "cluster": {"roles": [], "databases": [], "settings": null}}`), Options{})
	for _, absent := range []string{"listen_addresses", "port =", "unix_socket", "neon.stripe_size", "neon.pageserver_connstring",
		"neon.safekeepers", "neon.tenant_id", "ssl", "hot_standby", "recovery_target_lsn", "dynamic_shared_memory_type",
		"Managed by compute_ctl: begin", "pgaudit", "shared_preload_libraries", "log_destination"} {
		if strings.Contains(conf, absent) {
			t.Errorf("%q written for a bare spec:\n%s", absent, conf)
		}
	}
	for _, present := range []string{"# Neon storage settings\n", "neon.compute_mode=primary\n", "neon.extension_server_port=3081\n",
		"neon.privileged_role_name='neon_superuser'\n", "neon.disable_logical_replication_subscribers=false\n"} {
		if !strings.Contains(conf, present) {
			t.Errorf("%q missing:\n%s", present, conf)
		}
	}
}

// logs_export_host turns Postgres's syslog copy on only when compute-rsyslog can ship to
// it: a malformed value is not shipped, so no line goes to syslog for nothing.
func TestPostgresqlConfLogsExportHost(t *testing.T) {
	for host, want := range map[string]bool{
		"collector.cvc.local:514": true, "[::1]:514": true,
		"collector.cvc.local": false, "": false, "http://collector:514": false, `x" y:1`: false,
	} {
		s := parsed(t, `{"format_version": 1, "suspend_timeout_seconds": 1, "cluster": {"roles": [], "databases": [], "settings": null}}`)
		s.Spec.LogsExportHost = &host
		if got := strings.Contains(PostgresqlConf(s, Options{}), "log_destination='stderr,syslog'\n"); got != want {
			t.Errorf("logs_export_host %q: log_destination written %v, want %v", host, got, want)
		}
	}
}

// Without file names (package pgdata always passes them) nothing refers to a file:
// no include, and ssl with Postgres's default file names.
func TestPostgresqlConfWithoutFiles(t *testing.T) {
	conf := PostgresqlConf(parsed(t, specWith(``)), Options{TLS: true})
	for _, absent := range []string{"include_if_exists", "ssl_cert_file", "ssl_key_file"} {
		if strings.Contains(conf, absent) {
			t.Errorf("%q written without file names:\n%s", absent, conf)
		}
	}
	if !strings.Contains(conf, "ssl = on\n") {
		t.Errorf("ssl not on:\n%s", conf)
	}
	conf = PostgresqlConf(parsed(t, specWith(``)), Options{TLS: true,
		Files: Files{TempOverride: "it's.conf", ServerCert: "c.crt", ServerKey: "k.key"}})
	for _, want := range []string{"ssl_cert_file = 'c.crt'\n", "ssl_key_file = 'k.key'\n", "include_if_exists = 'it''s.conf'\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("%q missing:\n%s", want, conf)
		}
	}
}

// After the apply, logical replication subscribers are enabled again (compute_ctl appends
// the line after the start's apply), whatever drop_subscriptions_before_start wrote.
func TestEnableSubscribers(t *testing.T) {
	for _, tc := range []struct {
		name, conf, want string
		changed          bool
	}{
		{"flag set: disabled during the start", "port=5432\nneon.disable_logical_replication_subscribers=true\n",
			"port=5432\nneon.disable_logical_replication_subscribers=true\n" + SubscribersEnabledLine + "\n", true},
		{"no line at all, no newline at the end", "port=5432", "port=5432\n" + SubscribersEnabledLine + "\n", true},
		{"empty", "", SubscribersEnabledLine + "\n", true},
		{"already enabled", "neon.disable_logical_replication_subscribers = false\n", "neon.disable_logical_replication_subscribers = false\n", false},
		{"enabled, then disabled", "neon.disable_logical_replication_subscribers=false\nneon.disable_logical_replication_subscribers=true\n",
			"neon.disable_logical_replication_subscribers=false\nneon.disable_logical_replication_subscribers=true\n" + SubscribersEnabledLine + "\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := EnableSubscribers(tc.conf)
			if got != tc.want || changed != tc.changed {
				t.Fatalf("EnableSubscribers = %q, %v; want %q, %v", got, changed, tc.want, tc.changed)
			}
			if again, changed := EnableSubscribers(got); changed || again != got {
				t.Errorf("a second call changed it again: %q", again)
			}
		})
	}
}

func TestSettingAndEscape(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		opt  spec.GenericOption
		want string
	}{
		{spec.GenericOption{Name: "a", Value: str(`it's \ here`), Vartype: "string"}, `a = 'it''s \\ here'`},
		{spec.GenericOption{Name: "a", Value: str(`it's`), Vartype: "enum"}, `a = it's`},
		{spec.GenericOption{Name: "a", Value: str(""), Vartype: "string"}, `a = ''`},
		{spec.GenericOption{Name: "fsync", Vartype: "bool"}, `fsync`},
		{spec.GenericOption{Name: "x", Value: str("1"), Vartype: "String"}, `x = 1`},
	}
	for _, tc := range tests {
		if got := Setting(tc.opt); got != tc.want {
			t.Errorf("Setting(%+v) = %s, want %s", tc.opt, got, tc.want)
		}
	}
}

func TestEffectivePort(t *testing.T) {
	tests := []struct {
		name string
		spec string
		opts Options
		want int
	}{
		{"ours", specWith(``), Options{Port: 55432}, 55432},
		{"default", specWith(``), Options{}, 5432},
		{"settings win", `{"format_version":1,"suspend_timeout_seconds":1,"cluster":{"roles":[],"databases":[],
			"postgresql_conf":"port = 7000","settings":[{"name":"port","value":"6000","vartype":"integer"},{"name":"port","value":"6001","vartype":"integer"}]}}`,
			Options{Port: 1}, 6001},
		{"postgresql_conf", `{"format_version":1,"suspend_timeout_seconds":1,"cluster":{"roles":[],"databases":[],
			"postgresql_conf":"port = 7000 # first\nport=7001\n#port = 9\nmax_connections = 3"}}`, Options{Port: 1}, 7001},
	}
	for _, tc := range tests {
		if got := EffectivePort(parsed(t, tc.spec), tc.opts); got != tc.want {
			t.Errorf("%s: EffectivePort = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestHBAAndIdentGolden(t *testing.T) {
	hba, err := HBA("cloud_admin")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "pg_hba.conf", hba)
	ident, err := Ident("cloud_admin", []string{"postgres", "root"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "pg_ident.conf", ident)
	// Neon's exact bytes, checked independently of the golden file.
	if !strings.Contains(hba, "\nhost\tall\t\tall\t\tall\t\tmd5\n") {
		t.Errorf("Neon's host line missing or altered:\n%q", hba)
	}
	if !strings.Contains(hba, "local\tall\tcloud_admin\t\tpeer map=compute\n") || !strings.Contains(hba, "local\tall\tall\t\tmd5\n") {
		t.Errorf("local lines missing:\n%s", hba)
	}
	if strings.Index(hba, "peer map=compute") > strings.Index(hba, "local\tall\tall") {
		t.Error("the admin peer line must come before the catch-all local line (first match wins)")
	}
	custom, err := Ident("admin", []string{"compute-api", "svc.user"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(custom, "compute\tcompute-api\tadmin\ncompute\tsvc.user\tadmin\n") {
		t.Errorf("custom ident = %q", custom)
	}
}

func TestCheckAdminRole(t *testing.T) {
	for _, ok := range []string{"cloud_admin", "_x", "a1", strings.Repeat("a", 63)} {
		if err := CheckAdminRole(ok); err != nil {
			t.Errorf("CheckAdminRole(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Cloud_Admin", "1admin", "all", "sameuser", "replication", "+group", "@file", "/regex",
		`we"ird`, "with space", "a,b", "dash-ed", strings.Repeat("a", 64), "a\x00"} {
		if err := CheckAdminRole(bad); err == nil {
			t.Errorf("CheckAdminRole(%q) accepted", bad)
		}
		if _, err := HBA(bad); err == nil {
			t.Errorf("HBA(%q) accepted", bad)
		}
		if _, err := Ident(bad, []string{"postgres"}); err == nil {
			t.Errorf("Ident(%q) accepted", bad)
		}
	}
	if _, err := Ident("cloud_admin", nil); err == nil {
		t.Error("Ident without any OS user accepted")
	}
	for _, badUser := range []string{"/^.*$", "+x", "", "Root", "a b", "-x"} {
		if _, err := Ident("cloud_admin", []string{"postgres", badUser}); err == nil {
			t.Errorf("Ident OS user %q accepted", badUser)
		}
	}
}

// In neon mode zenith_admin (old timelines) logs in as the admin role does: on its
// peer line and in the ident map, after the admin role; a repeat is dropped and a bad
// name refused.
func TestHBAAndIdentLegacyRoles(t *testing.T) {
	hba, err := HBA("cloud_admin", "zenith_admin", "cloud_admin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hba, "local\tall\tcloud_admin,zenith_admin\t\tpeer map=compute\n") {
		t.Errorf("hba:\n%s", hba)
	}
	ident, err := Ident("cloud_admin", []string{"postgres", "root"}, "zenith_admin")
	if err != nil {
		t.Fatal(err)
	}
	want := "compute\tpostgres\tcloud_admin\ncompute\tpostgres\tzenith_admin\ncompute\troot\tcloud_admin\ncompute\troot\tzenith_admin\n"
	if !strings.HasSuffix(ident, want) {
		t.Errorf("ident = %q, want suffix %q", ident, want)
	}
	if _, err := HBA("cloud_admin", "all"); err == nil || !strings.Contains(err.Error(), "legacy admin role") {
		t.Errorf("legacy role all: err %v", err)
	}
	if _, err := Ident("cloud_admin", []string{"postgres"}, "Zenith"); err == nil {
		t.Error("legacy role Zenith accepted")
	}
}

// pageserver_connection_info (Neon main) gives the stripe size and the libpq URLs of the
// shards; a shard without a libpq URL (a gRPC-only compute) leaves Postgres without a
// connstring, as compute_ctl writes it. The legacy fields are not used then.
func TestPostgresqlConfConnectionInfo(t *testing.T) {
	base := `{"format_version": 1, "suspend_timeout_seconds": -1, "cluster": {"roles": [], "databases": []},
  "tenant_id": "0123456789abcdef0123456789abcdef", "timeline_id": "fedcba9876543210fedcba9876543210",
  "safekeeper_connstrings": ["a:1"], "pageserver_connstring": "postgresql://legacy:1", "shard_stripe_size": 9,
  "pageserver_connection_info": {"shard_count": 2, "stripe_size": 2048, "prefer_protocol": "%s", "shards": {
    "0002": {"pageservers": [{"id": 1, "libpq_url": "postgresql://a:6400", "grpc_url": "grpc://a:51051"}]},
    "0102": {"pageservers": [{"id": 2, "libpq_url": %s, "grpc_url": "grpc://b:51051"}]}}}}`
	conf := PostgresqlConf(parsed(t, fmt.Sprintf(base, "libpq", `"postgresql://b:6400"`)), Options{})
	for _, want := range []string{"neon.stripe_size=2048\n# Neon storage settings\n",
		"neon.pageserver_connstring='postgresql://a:6400,postgresql://b:6400'\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("lacks %q:\n%s", want, conf)
		}
	}
	conf = PostgresqlConf(parsed(t, fmt.Sprintf(base, "grpc", "null")), Options{})
	if !strings.Contains(conf, "# no neon.pageserver_connstring\n") || strings.Contains(conf, "neon.pageserver_connstring=") ||
		strings.Contains(conf, "legacy") || strings.Contains(conf, "neon.stripe_size=9") {
		t.Errorf("gRPC-only:\n%s", conf)
	}
}
