package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// neonFixtureDir holds Neon's own cluster_spec.json fixtures, outside the repository
// (repo-root/../shared/reference/neon). They are never copied into the repository.
const neonFixtureDir = "../../../shared/reference/neon"

func readNeonFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(neonFixtureDir, name))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("Neon fixture %s not found under %s (the shared reference directory is absent)", name, neonFixtureDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNeonFixtures(t *testing.T) {
	tests := []struct {
		file string
		// wantParseErr is the error of Parse (ParsedSpec); "" means it must succeed.
		wantParseErr string
		wantSKs      []string
	}{
		// Neon's compute_tools fixture lists 127.0.0.1:6502 twice on purpose: Neon's own
		// test expects ParsedSpec to reject it.
		{file: "compute_tools_tests_cluster_spec.json", wantParseErr: "duplicate entry in safekeeper_connstrings: 127.0.0.1:6502!"},
		{file: "libs_compute_api_tests_cluster_spec.json", wantSKs: []string{"127.0.0.1:6502", "127.0.0.1:6503", "127.0.0.1:6501"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b := readNeonFixture(t, tc.file)
			s, err := ParseSpec(b)
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			// Neon's parse_spec_file test: defaults.
			if s.Features == nil || len(s.Features) != 0 {
				t.Errorf("features = %#v, want empty non-nil", s.Features)
			}
			if s.ReconfigureConcurrency != 1 {
				t.Errorf("reconfigure_concurrency = %d, want 1", s.ReconfigureConcurrency)
			}
			if s.AuditLogLevel != AuditDisabled || s.Mode != Primary {
				t.Errorf("audit %q mode %v, want Disabled/primary", s.AuditLogLevel, s.Mode)
			}
			if s.FormatVersion != 1 || s.SuspendTimeoutSeconds != 3600 {
				t.Errorf("format_version %v suspend %d", s.FormatVersion, s.SuspendTimeoutSeconds)
			}
			if len(s.Cluster.Roles) != 6 || s.Cluster.Roles[2].Name != `zenith "new"` || s.Cluster.Roles[4].Name != `"name";\n select 1;` {
				t.Errorf("roles = %+v", s.Cluster.Roles)
			}
			if len(s.Cluster.Databases) != 3 || s.Cluster.Databases[0].Owner != "alexk" || len(s.Cluster.Databases[0].Options) != 3 {
				t.Errorf("databases = %+v", s.Cluster.Databases)
			}
			if v, _ := s.Cluster.Settings.Find("test.escaping"); v != `here's a backslash \ and a quote ' and a double-quote " hooray` {
				t.Errorf("test.escaping = %q", v)
			}
			if len(s.DeltaOperations) != 4 || s.DeltaOperations[3].NewName == nil || *s.DeltaOperations[3].NewName != `zenith "new"` {
				t.Errorf("delta ops = %+v", s.DeltaOperations)
			}
			if s.PgbouncerSettings == nil || !reflect.DeepEqual(*s.PgbouncerSettings, OrderedStringMap{{"default_pool_size", "42"}, {"pool_mode", "session"}}) {
				t.Errorf("pgbouncer_settings = %+v", s.PgbouncerSettings)
			}
			if s.RemoteExtensions == nil || s.RemoteExtensions.LibraryIndex["postgis-3"] != "postgis" ||
				!reflect.DeepEqual(s.RemoteExtensions.PublicExtensions, []string{"postgis"}) ||
				len(s.RemoteExtensions.ExtensionData["postgis"].ControlData) != 8 {
				t.Errorf("remote_extensions = %+v", s.RemoteExtensions)
			}

			p, err := Parse(s)
			if tc.wantParseErr != "" {
				if err == nil || err.Error() != tc.wantParseErr {
					t.Fatalf("Parse error = %v, want %q", err, tc.wantParseErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := &Parsed{
				Spec: s, Storage: StorageNeon,
				TenantID:              "b0554b632bd4d547a63b86c3630317e8",
				TimelineID:            "2414a61ffc94e428f14b5758fe308e13",
				PageserverConnstr:     "host=127.0.0.1 port=6400",
				SafekeeperConnstrings: tc.wantSKs,
				// The fixture has only pageserver_connstring: the legacy conversion, one
				// unsharded pageserver over libpq.
				Pageserver: PageserverConn{Shards: []PageserverShard{{Pageservers: []PageserverURLs{{Libpq: "host=127.0.0.1 port=6400"}}}},
					Prefer: ProtocolLibpq, Legacy: true},
			}
			if !reflect.DeepEqual(p, want) {
				t.Errorf("Parse = %+v\nwant    %+v", p, want)
			}

			// The same spec inside a ComputeConfig.
			cfg := []byte(`{"compute_ctl_config":{"jwks":{"keys":[]}},"spec":` + string(b) + `}`)
			c, err := ParseConfig(cfg)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(c.Spec, s) {
				t.Error("spec inside a config parses differently from the bare spec")
			}
		})
	}
}

func TestOwnFixtures(t *testing.T) {
	tests := []struct {
		file       string
		wantSpec   bool
		storage    StorageMode
		mode       ModeType
		staticLSN  string
		sks        []string
		audit      ComputeAudit
		concurrent int
	}{
		{file: "config_standalone.json", wantSpec: true, storage: StorageStandalone, mode: "primary", audit: AuditDisabled, concurrent: 1},
		{file: "config_neon_primary.json", wantSpec: true, storage: StorageNeon, mode: "primary", sks: []string{"sk-1:5454", "sk-2:5454", "sk-3:5454"}, audit: AuditBase, concurrent: 4},
		{file: "config_static.json", wantSpec: true, storage: StorageNeon, mode: "static", staticLSN: "0/169AD58", audit: AuditDisabled, concurrent: 1},
		{file: "config_replica.json", wantSpec: true, storage: StorageNeon, mode: "replica", audit: AuditFull, concurrent: 1},
		{file: "config_empty.json"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := ParseConfig(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ComputeCtlConfig == nil || !json.Valid(cfg.ComputeCtlConfig.JWKS) {
				t.Fatalf("compute_ctl_config = %+v", cfg.ComputeCtlConfig)
			}
			if !tc.wantSpec {
				if cfg.Spec != nil {
					t.Fatalf("spec = %+v, want nil", cfg.Spec)
				}
				return
			}
			s := cfg.Spec
			if s == nil {
				t.Fatal("spec is nil")
			}
			p, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p.Storage != tc.storage || s.Mode.Type() != tc.mode || s.AuditLogLevel != tc.audit || s.ReconfigureConcurrency != tc.concurrent {
				t.Errorf("storage %s mode %s audit %s concurrency %d", p.Storage, s.Mode.Type(), s.AuditLogLevel, s.ReconfigureConcurrency)
			}
			lsn, ok := s.Mode.StaticLSN()
			if ok != (tc.staticLSN != "") || (ok && lsn.String() != tc.staticLSN) {
				t.Errorf("StaticLSN = %v, %v; want %q", lsn, ok, tc.staticLSN)
			}
			if !reflect.DeepEqual(p.SafekeeperConnstrings, tc.sks) {
				t.Errorf("safekeepers = %q, want %q", p.SafekeeperConnstrings, tc.sks)
			}
		})
	}
}

func TestOwnFixtureDetails(t *testing.T) {
	cfg, err := ParseConfig(readTestdata(t, "config_neon_primary.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(cfg.Spec)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Spec
	if p.TenantID != "0123456789abcdef0123456789abcdef" || p.TimelineID != "fedcba9876543210fedcba9876543210" ||
		p.PageserverConnstr != "postgresql://no_user@pageserver-0:6400,postgresql://no_user@pageserver-1:6400" ||
		p.StorageAuthToken != "eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl" ||
		p.EndpointStorageAddr != "endpoint-storage:9993" || p.EndpointStorageToken != "eyJhbGciOiJFZERTQSJ9.e30.dG9rZW4" {
		t.Errorf("parsed = %+v", p)
	}
	if *s.SafekeepersGeneration != 7 || *s.ShardStripeSize != 32768 || !s.DropSubscriptionsBeforeStart ||
		!s.Autoprewarm || *s.OffloadLFCIntervalSeconds != 60 || *s.LogsExportHost != "logs.example.net:10514" {
		t.Errorf("spec = %+v", s)
	}
	if cfg.ComputeCtlConfig.TLS == nil || cfg.ComputeCtlConfig.TLS.CertPath != "/etc/compute/tls/server.crt" {
		t.Errorf("tls = %+v", cfg.ComputeCtlConfig.TLS)
	}

	cfg, err = ParseConfig(readTestdata(t, "config_standalone.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Spec.Features, []string{"activity_monitor_experimental", "some_future_flag"}) {
		t.Errorf("features = %q", cfg.Spec.Features)
	}
	if got := *cfg.Spec.PgbouncerSettings; !reflect.DeepEqual(got, OrderedStringMap{{"pool_mode", "transaction"}, {"default_pool_size", "20"}, {"max_client_conn", "500"}}) {
		t.Errorf("pgbouncer order = %+v", got)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(cfg.ComputeCtlConfig.JWKS, &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["crv"] != "Ed25519" {
		t.Errorf("jwks = %s (%v)", cfg.ComputeCtlConfig.JWKS, err)
	}
	p, err = Parse(cfg.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if p.TenantID != "" || p.PageserverConnstr != "" || p.SafekeeperConnstrings != nil || p.Neon() {
		t.Errorf("standalone parsed = %+v", p)
	}
}

// minimalSpec is the smallest spec Neon accepts.
const minimalSpec = `{"format_version":1.0,"suspend_timeout_seconds":-1,"cluster":{"roles":[],"databases":[]}}`

// edit decodes base, lets fn change the generic value and re-encodes it.
func edit(t *testing.T, base string, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

func TestParseSpecRequiredFields(t *testing.T) {
	role := func() map[string]any { return map[string]any{"name": "r", "encrypted_password": nil} }
	tests := []struct {
		name string
		fn   func(m map[string]any)
		want string
	}{
		{"format_version", func(m map[string]any) { delete(m, "format_version") }, `spec: missing field "format_version"`},
		{"format_version null", func(m map[string]any) { m["format_version"] = nil }, `spec: field "format_version" must not be null`},
		{"cluster", func(m map[string]any) { delete(m, "cluster") }, `spec: missing field "cluster"`},
		{"suspend_timeout_seconds", func(m map[string]any) { delete(m, "suspend_timeout_seconds") }, `spec: missing field "suspend_timeout_seconds"`},
		{"cluster.roles", func(m map[string]any) { delete(obj(m, "cluster"), "roles") }, `spec: cluster: missing field "roles"`},
		{"cluster.databases", func(m map[string]any) { delete(obj(m, "cluster"), "databases") }, `spec: cluster: missing field "databases"`},
		{"cluster.roles null", func(m map[string]any) { obj(m, "cluster")["roles"] = nil }, `spec: cluster: field "roles" must not be null`},
		{"role name", func(m map[string]any) {
			r := role()
			delete(r, "name")
			obj(m, "cluster")["roles"] = []any{role(), role(), r}
		}, `spec: cluster.roles[2]: missing field "name"`},
		{"role null element", func(m map[string]any) { obj(m, "cluster")["roles"] = []any{nil} }, `spec: cluster.roles[0]: want an object, got null`},
		{"role option vartype", func(m map[string]any) {
			r := role()
			r["options"] = []any{map[string]any{"name": "LOGIN"}}
			obj(m, "cluster")["roles"] = []any{r}
		}, `spec: cluster.roles[0].options[0]: missing field "vartype"`},
		{"database name", func(m map[string]any) {
			obj(m, "cluster")["databases"] = []any{map[string]any{"owner": "r"}}
		}, `spec: cluster.databases[0]: missing field "name"`},
		{"database owner", func(m map[string]any) {
			obj(m, "cluster")["databases"] = []any{map[string]any{"name": "d"}}
		}, `spec: cluster.databases[0]: missing field "owner"`},
		{"database option name", func(m map[string]any) {
			obj(m, "cluster")["databases"] = []any{map[string]any{"name": "d", "owner": "r", "options": []any{map[string]any{"vartype": "string"}}}}
		}, `spec: cluster.databases[0].options[0]: missing field "name"`},
		{"setting name", func(m map[string]any) {
			obj(m, "cluster")["settings"] = []any{map[string]any{"value": "1", "vartype": "integer"}}
		}, `spec: cluster.settings[0]: missing field "name"`},
		{"setting vartype", func(m map[string]any) {
			obj(m, "cluster")["settings"] = []any{map[string]any{"name": "x", "value": "1"}}
		}, `spec: cluster.settings[0]: missing field "vartype"`},
		{"delta action", func(m map[string]any) { m["delta_operations"] = []any{map[string]any{"name": "x"}} }, `spec: delta_operations[0]: missing field "action"`},
		{"delta name", func(m map[string]any) { m["delta_operations"] = []any{map[string]any{"action": "delete_db"}} }, `spec: delta_operations[0]: missing field "name"`},
		{"remote_extensions", func(m map[string]any) { m["remote_extensions"] = map[string]any{"library_index": map[string]any{}} },
			`spec: remote_extensions: missing field "extension_data"`},
		{"local_proxy jwks", func(m map[string]any) {
			m["local_proxy_config"] = map[string]any{"jwks": []any{map[string]any{"id": "a", "role_names": []any{}, "jwks_url": "u"}}}
		}, `spec: local_proxy_config.jwks[0]: missing field "provider_name"`},
		{"several at once", func(m map[string]any) {
			delete(m, "format_version")
			obj(m, "cluster")["databases"] = []any{map[string]any{}}
		}, `spec: missing field "format_version"; cluster.databases[0]: missing field "name"; cluster.databases[0]: missing field "owner"`},
		{"negative concurrency", func(m map[string]any) { m["reconfigure_concurrency"] = -1 }, `spec: field "reconfigure_concurrency" must not be negative`},
		{"zero offload interval", func(m map[string]any) { m["offload_lfc_interval_seconds"] = 0 }, `spec: field "offload_lfc_interval_seconds" must not be zero`},
		{"wrong type", func(m map[string]any) { m["suspend_timeout_seconds"] = "soon" }, `spec: suspend_timeout_seconds: cannot use a JSON string as a number (int64)`},
		{"wrong nested type", func(m map[string]any) { obj(m, "cluster")["roles"] = []any{map[string]any{"name": 5}} }, `spec: cluster.roles.name: cannot use a JSON number as a string`},
		{"bad mode", func(m map[string]any) { m["mode"] = "Secondary" }, `spec: mode: unknown variant "Secondary", expected Primary, Static or Replica`},
		{"bad audit", func(m map[string]any) { m["audit_log_level"] = "full" }, `spec: audit_log_level: unknown variant "full", expected one of Disabled, Log, Base, Hipaa, Extended, Full`},
		{"bad static lsn", func(m map[string]any) { m["mode"] = map[string]any{"Static": 42} }, `spec: mode: Static: invalid LSN 42: want a string "HI/LO"`},
		{"pgbouncer non-string", func(m map[string]any) { m["pgbouncer_settings"] = map[string]any{"a": 1} }, `spec: pgbouncer_settings: value of "a" must be a string`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec(edit(t, minimalSpec, tc.fn))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error = %v\nwant    %s", err, tc.want)
			}
		})
	}
	// The untouched base is valid, so every case above failed for its own reason.
	if _, err := ParseSpec([]byte(minimalSpec)); err != nil {
		t.Fatal(err)
	}
}

func TestParseConfigRequiredFields(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"no compute_ctl_config", `{"spec":null}`, `config: missing field "compute_ctl_config"`},
		{"null compute_ctl_config", `{"compute_ctl_config":null}`, `config: field "compute_ctl_config" must not be null`},
		{"no jwks", `{"compute_ctl_config":{}}`, `config: compute_ctl_config: missing field "jwks"`},
		{"null jwks", `{"compute_ctl_config":{"jwks":null}}`, `config: compute_ctl_config: field "jwks" must not be null`},
		{"jwks not an object", `{"compute_ctl_config":{"jwks":[1]}}`, `config: compute_ctl_config.jwks: want an object`},
		{"jwks without keys", `{"compute_ctl_config":{"jwks":{}}}`, `config: compute_ctl_config.jwks: missing field "keys"`},
		{"jwks keys not array", `{"compute_ctl_config":{"jwks":{"keys":{}}}}`, `config: compute_ctl_config.jwks: field "keys" must be an array`},
		{"tls without cert", `{"compute_ctl_config":{"jwks":{"keys":[]},"tls":{"key_path":"k"}}}`, `config: compute_ctl_config.tls: missing field "cert_path"`},
		{"bad spec", `{"compute_ctl_config":{"jwks":{"keys":[]}},"spec":{"cluster":{"roles":[{}],"databases":[]},"format_version":1,"suspend_timeout_seconds":1}}`,
			`spec: cluster.roles[0]: missing field "name"`},
		{"spec not an object", `{"compute_ctl_config":{"jwks":{"keys":[]}},"spec":[]}`, `spec: value: cannot use a JSON array as an object`},
		{"not an object", `[1,2]`, `config: want a JSON object`},
		{"null", `null`, `config: want a JSON object`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.body))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error = %v\nwant    %s", err, tc.want)
			}
		})
	}
}

func TestMalformedJSON(t *testing.T) {
	for _, body := range []string{``, `{`, `{"spec":}`, `{"compute_ctl_config":{"jwks":{"keys":[]}}} trailing`, "\x00", `{"a":1,}`} {
		if _, err := ParseConfig([]byte(body)); err == nil || !strings.HasPrefix(err.Error(), "config: invalid JSON") {
			t.Errorf("ParseConfig(%q) error = %v, want invalid JSON", body, err)
		}
		if _, err := ParseSpec([]byte(body)); err == nil || !strings.HasPrefix(err.Error(), "spec: invalid JSON") {
			t.Errorf("ParseSpec(%q) error = %v, want invalid JSON", body, err)
		}
	}
}

func TestUnknownFieldsTolerated(t *testing.T) {
	body := `{
	  "future": {"anything": [1, 2]},
	  "compute_ctl_config": {"jwks": {"keys": [], "x-extra": true}, "new_knob": 1},
	  "spec": {
	    "format_version": 1.0, "suspend_timeout_seconds": 5, "timestamp": "2021-05-23T18:25:43.511Z",
	    "unknown_field_123123123": "hello",
	    "cluster": {"roles": [{"name": "a", "color": "blue", "options": [{"name": "LOGIN", "vartype": "bool", "extra": 1}]}],
	                "databases": [{"name": "d", "owner": "a", "restrict_conn": true, "invalid": true, "x": null}],
	                "settings": [{"name": "work_mem", "value": "4MB", "vartype": "string", "comment": "x"}],
	                "something_new": {}},
	    "delta_operations": [{"action": "future_action", "name": "x", "why": "because"}],
	    "features": ["activity_monitor_experimental", "foo_bar_feature"]
	  }
	}`
	cfg, err := ParseConfig([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Spec.Cluster.Databases[0]
	if d.RestrictConn || d.Invalid {
		t.Errorf("output-only database flags were read from input: %+v", d)
	}
	if len(cfg.Spec.Features) != 2 {
		t.Errorf("unknown features must be kept, got %q", cfg.Spec.Features)
	}
	if _, err := Parse(cfg.Spec); err != nil {
		t.Errorf("Parse: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	s, err := ParseSpec([]byte(minimalSpec))
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != Primary || s.ReconfigureConcurrency != 1 || s.AuditLogLevel != AuditDisabled || s.Features == nil || len(s.Features) != 0 {
		t.Fatalf("defaults: mode %v concurrency %d audit %q features %#v", s.Mode, s.ReconfigureConcurrency, s.AuditLogLevel, s.Features)
	}
	// null is the same as absent for the defaulted fields; explicit values are kept.
	s, err = ParseSpec(edit(t, minimalSpec, func(m map[string]any) {
		m["mode"], m["audit_log_level"], m["features"], m["reconfigure_concurrency"] = nil, nil, nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != Primary || s.ReconfigureConcurrency != 1 || s.AuditLogLevel != AuditDisabled || s.Features == nil {
		t.Fatalf("null defaults: %+v", s)
	}
	s, err = ParseSpec(edit(t, minimalSpec, func(m map[string]any) { m["reconfigure_concurrency"] = 0 }))
	if err != nil || s.ReconfigureConcurrency != 0 {
		t.Fatalf("explicit 0 concurrency: %v, %v", s, err)
	}
}

func TestComputeModeJSON(t *testing.T) {
	tests := []struct {
		in, out string
		typ     ModeType
		lsn     Lsn
		static  bool
	}{
		{`"Primary"`, `"Primary"`, "primary", 0, false},
		{`"Replica"`, `"Replica"`, "replica", 0, false},
		{`{"Static":"0/169AD58"}`, `{"Static":"0/169AD58"}`, "static", 0x169AD58, true},
		{`{"Static":"16/b374d848"}`, `{"Static":"16/B374D848"}`, "static", 0x16B374D848, true},
		{`{"Static":"FFFFFFFF/FFFFFFFF"}`, `{"Static":"FFFFFFFF/FFFFFFFF"}`, "static", ^Lsn(0), true},
		{`{"Primary":null}`, `"Primary"`, "primary", 0, false},
		{`null`, `"Primary"`, "primary", 0, false},
	}
	for _, tc := range tests {
		var m ComputeMode
		if err := json.Unmarshal([]byte(tc.in), &m); err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		lsn, ok := m.StaticLSN()
		if m.Type() != tc.typ || lsn != tc.lsn || ok != tc.static || m.IsPrimary() != (tc.typ == "primary") {
			t.Errorf("%s: type %s lsn %v static %v", tc.in, m.Type(), lsn, ok)
		}
		out, err := json.Marshal(m)
		if err != nil || string(out) != tc.out {
			t.Errorf("%s: marshal = %s, %v; want %s", tc.in, out, err, tc.out)
		}
	}
	for _, bad := range []string{`"Static"`, `"primary"`, `{"Static":"0/1","Replica":null}`, `{}`, `{"Static":1234}`, `{"Static":"1234"}`, `{"Replica":1}`, `42`, `["Primary"]`} {
		var m ComputeMode
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("%s: accepted as %v", bad, m)
		}
	}
	if Static(0x10).String() != "static@0/10" || Replica.String() != "replica" {
		t.Errorf("String: %s %s", Static(0x10), Replica)
	}
}

func TestComputeAuditJSON(t *testing.T) {
	for _, a := range AuditLevels {
		b, err := json.Marshal(a)
		if err != nil || string(b) != `"`+string(a)+`"` {
			t.Errorf("marshal %s = %s, %v", a, b, err)
		}
		var back ComputeAudit
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("round trip %s = %s, %v", a, back, err)
		}
	}
	if b, _ := json.Marshal(ComputeAudit("")); string(b) != `"Disabled"` {
		t.Errorf("zero value marshals as %s", b)
	}
	for _, bad := range []string{`"disabled"`, `"FULL"`, `""`, `1`, `{"Full":null}`} {
		var a ComputeAudit
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("%s accepted as %q", bad, a)
		}
	}
}

func TestLsn(t *testing.T) {
	good := []struct {
		in   string
		want Lsn
		out  string
	}{
		{"0/169AD58", 0x169AD58, "0/169AD58"},
		{"0/0", 0, "0/0"},
		{"1/0", 1 << 32, "1/0"},
		{"00000001/0000000A", 0x10000000A, "1/A"},
		{"abc/def", 0xabc00000def, "ABC/DEF"},
		{" 0/10 ", 0x10, "0/10"},
		{"FFFFFFFF/FFFFFFFF", ^Lsn(0), "FFFFFFFF/FFFFFFFF"},
	}
	for _, tc := range good {
		l, err := ParseLsn(tc.in)
		if err != nil || l != tc.want || l.String() != tc.out {
			t.Errorf("ParseLsn(%q) = %v (%d), %v; want %s", tc.in, l, uint64(l), err, tc.out)
		}
		b, _ := json.Marshal(l)
		var back Lsn
		if err := json.Unmarshal(b, &back); err != nil || back != l || string(b) != `"`+tc.out+`"` {
			t.Errorf("JSON round trip %q: %s -> %v, %v", tc.in, b, back, err)
		}
	}
	for _, bad := range []string{"", "/", "0/", "/0", "0", "0/1/2", "x/1", "100000000/0", "0/100000000", "-1/0", "0x1/0", "1_0/0"} {
		if l, err := ParseLsn(bad); err == nil {
			t.Errorf("ParseLsn(%q) = %v, want error", bad, l)
		}
	}
	var l Lsn
	if err := json.Unmarshal([]byte(`23943000`), &l); err == nil {
		t.Error("a JSON number was accepted as an LSN")
	}
}

func TestOrderedStringMap(t *testing.T) {
	var m OrderedStringMap
	if err := json.Unmarshal([]byte(`{"z":"1","a":"2","m":"3","a":"4"}`), &m); err != nil {
		t.Fatal(err)
	}
	want := OrderedStringMap{{"z", "1"}, {"a", "4"}, {"m", "3"}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	if v, ok := m.Get("m"); !ok || v != "3" {
		t.Errorf("Get(m) = %q, %v", v, ok)
	}
	if _, ok := m.Get("nope"); ok {
		t.Error("Get(nope) found something")
	}
	b, err := json.Marshal(m)
	if err != nil || string(b) != `{"z":"1","a":"4","m":"3"}` {
		t.Errorf("marshal = %s, %v", b, err)
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a":null}`, `{"a":{"b":"c"}}`, `{"a":["b"]}`} {
		var m OrderedStringMap
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("%s accepted as %+v", bad, m)
		}
	}
}

// neonSpec is a valid neon-mode primary spec used as the base of validation cases.
const neonSpec = `{
  "format_version": 1, "suspend_timeout_seconds": -1,
  "cluster": {"roles": [{"name": "owner"}], "databases": [{"name": "db", "owner": "owner"}]},
  "tenant_id": "0123456789abcdef0123456789abcdef",
  "timeline_id": "fedcba9876543210fedcba9876543210",
  "pageserver_connstring": "postgresql://ps:6400",
  "safekeeper_connstrings": ["sk1:5454", "sk2:5454", "sk3:5454"]
}`

func setting(name, value string) map[string]any {
	return map[string]any{"name": name, "value": value, "vartype": "string"}
}

func TestParseValidation(t *testing.T) {
	long := strings.Repeat("x", 64)
	tests := []struct {
		name string
		base string
		fn   func(m map[string]any)
		want []string // nil: valid
	}{
		{"neon ok", neonSpec, func(m map[string]any) {}, nil},
		{"neon ok from settings", minimalSpec, func(m map[string]any) {
			obj(m, "cluster")["settings"] = []any{
				setting("neon.pageserver_connstring", "host=ps port=6400"),
				setting("neon.safekeepers", "a:1,b:2,c:3,d:4"), // even counts are fine
				setting("neon.tenant_id", "0123456789abcdef0123456789abcdef"),
				setting("neon.timeline_id", "fedcba9876543210fedcba9876543210"),
			}
		}, nil},
		{"no safekeepers", neonSpec, func(m map[string]any) { delete(m, "safekeeper_connstrings") },
			[]string{"safekeeper connstrings should be provided"}},
		{"empty safekeepers setting", neonSpec, func(m map[string]any) {
			delete(m, "safekeeper_connstrings")
			obj(m, "cluster")["settings"] = []any{setting("neon.safekeepers", "")}
		}, []string{"safekeeper_connstrings is empty"}},
		{"duplicate safekeepers", neonSpec, func(m map[string]any) {
			m["safekeeper_connstrings"] = []any{"sk3:1", "sk1:1", "sk3:1", "sk1:1"}
		}, []string{"duplicate entry in safekeeper_connstrings: sk1:1!"}},
		{"replica needs no safekeepers", neonSpec, func(m map[string]any) {
			delete(m, "safekeeper_connstrings")
			m["mode"] = "Replica"
		}, nil},
		{"static may repeat safekeepers", neonSpec, func(m map[string]any) {
			m["safekeeper_connstrings"] = []any{"a:1", "a:1"}
			m["mode"] = map[string]any{"Static": "0/16"}
		}, nil},
		{"line breaks in top-level strings", minimalSpec, func(m map[string]any) {
			m["endpoint_id"] = "ep-1\nshared_preload_libraries = 'evil'"
			m["project_id"] = "p\r1"
			m["branch_id"] = "b\x00"
			m["storage_auth_token"] = "tok\nNEON_OTHER=1"
			m["endpoint_storage_addr"] = "http://es\t/"
		}, []string{
			"project_id: contains a control character (line break, NUL, ...)",
			"branch_id: contains a control character (line break, NUL, ...)",
			"endpoint_id: contains a control character (line break, NUL, ...)",
			"storage_auth_token: contains a control character (line break, NUL, ...)",
			"endpoint_storage_addr: contains a control character (line break, NUL, ...)",
		}},
		{"line breaks in storage strings", neonSpec, func(m map[string]any) {
			m["pageserver_connstring"] = "host=ps\nport=1"
			m["safekeeper_connstrings"] = []any{"sk1:1", "sk2:1\n"}
		}, []string{
			"pageserver_connstring: contains a control character (line break, NUL, ...)",
			"safekeeper_connstrings[1]: contains a control character (line break, NUL, ...)",
		}},
		{"unicode in endpoint_id is fine", minimalSpec, func(m map[string]any) { m["endpoint_id"] = "ep-é" }, nil},
		{"no tenant", neonSpec, func(m map[string]any) { delete(m, "tenant_id") }, []string{"tenant id should be provided"}},
		{"bad tenant", neonSpec, func(m map[string]any) { m["tenant_id"] = "0123456789ABCDEF0123456789ABCDEF" }, []string{"invalid tenant id"}},
		{"bad tenant setting", neonSpec, func(m map[string]any) {
			delete(m, "tenant_id")
			obj(m, "cluster")["settings"] = []any{setting("neon.tenant_id", "xyz")}
		}, []string{"invalid tenant id"}},
		{"no timeline", neonSpec, func(m map[string]any) { delete(m, "timeline_id") }, []string{"timeline id should be provided"}},
		{"bad timeline", neonSpec, func(m map[string]any) { m["timeline_id"] = "0123" }, []string{"invalid timeline id"}},
		{"empty pageserver", neonSpec, func(m map[string]any) { m["pageserver_connstring"] = "" }, []string{"pageserver connstr should be provided"}},
		{"everything neon is missing", minimalSpec, func(m map[string]any) {
			obj(m, "cluster")["settings"] = []any{setting("neon.pageserver_connstring", "host=ps")}
		}, []string{"safekeeper connstrings should be provided", "tenant id should be provided", "timeline id should be provided"}},
		{"standalone ignores neon checks", minimalSpec, func(m map[string]any) {
			m["safekeeper_connstrings"] = []any{"a:1", "a:1"}
		}, nil},
		{"standalone still checks ids", minimalSpec, func(m map[string]any) {
			m["tenant_id"] = "nope"
			obj(m, "cluster")["settings"] = []any{setting("neon.timeline_id", "NOPE")}
		}, []string{"invalid tenant id", "invalid timeline id"}},
		{"role names", minimalSpec, func(m map[string]any) {
			obj(m, "cluster")["roles"] = []any{
				map[string]any{"name": ""}, map[string]any{"name": "a\x00b"}, map[string]any{"name": long},
				map[string]any{"name": "ok"}, map[string]any{"name": "ok"}, map[string]any{"name": strings.Repeat("é", 31) + "x"},
			}
		}, []string{
			"cluster.roles[0]: name is empty",
			"cluster.roles[1]: name contains a NUL byte",
			"cluster.roles[2]: name is 64 bytes long, at most 63 allowed",
			`cluster.roles[4]: duplicate role name "ok"`,
		}},
		{"database names and owners", minimalSpec, func(m map[string]any) {
			obj(m, "cluster")["databases"] = []any{
				map[string]any{"name": "db", "owner": ""}, map[string]any{"name": "db", "owner": "o"},
				map[string]any{"name": long, "owner": "o\x00"},
			}
		}, []string{
			"cluster.databases[0]: owner is empty",
			`cluster.databases[1]: duplicate database name "db"`,
			"cluster.databases[2]: name is 64 bytes long, at most 63 allowed",
			"cluster.databases[2]: owner contains a NUL byte",
		}},
		{"delta ops", minimalSpec, func(m map[string]any) {
			m["delta_operations"] = []any{
				map[string]any{"action": "rename_role", "name": "a"},
				map[string]any{"action": "rename_db", "name": "b", "new_name": ""},
				map[string]any{"action": "delete_db", "name": ""},
				map[string]any{"action": "delete_role", "name": "c"},
				map[string]any{"action": "rename_db", "name": "d", "new_name": "e"},
			}
		}, []string{
			`delta_operations[0]: rename_role of "a" needs new_name`,
			"delta_operations[1]: new_name: is empty",
			"delta_operations[2]: name is empty",
		}},
		{"settings", minimalSpec, func(m map[string]any) {
			obj(m, "cluster")["settings"] = []any{
				map[string]any{"name": "work_mem", "value": "4MB\nfsync = off", "vartype": "integer"},
				setting("a.b.c", "x"),
				setting("bad name", "x"),
				setting("9lives", "x"),
				setting("search_path", "a'\nb"),
				map[string]any{"name": "pg_stat_statements.track", "value": "all", "vartype": "enum"},
				map[string]any{"name": "jit", "vartype": "bool"},
			}
		}, []string{
			"cluster.settings[0]: value of work_mem contains a line break or NUL byte",
			`cluster.settings[1]: "a.b.c" is not a valid configuration parameter name`,
			`cluster.settings[2]: "bad name" is not a valid configuration parameter name`,
			`cluster.settings[3]: "9lives" is not a valid configuration parameter name`,
			"cluster.settings[4]: value of search_path contains a line break or NUL byte",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSpec(edit(t, tc.base, tc.fn))
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			p, err := Parse(s)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if p.Spec != s {
					t.Error("Parsed.Spec is not the input spec")
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse error = %v, want a ValidationError", err)
			}
			if !reflect.DeepEqual(ve.Problems, tc.want) {
				t.Fatalf("problems:\n%q\nwant\n%q", ve.Problems, tc.want)
			}
			if err.Error() != strings.Join(tc.want, "; ") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
	if _, err := Parse(nil); err == nil {
		t.Error("Parse(nil) succeeded")
	}
}

func TestParseResolvesFallbacks(t *testing.T) {
	s, err := ParseSpec(edit(t, neonSpec, func(m map[string]any) {
		m["pageserver_connstring"] = "postgresql://top:6400"
		m["storage_auth_token"] = "tok"
		obj(m, "cluster")["settings"] = []any{
			setting("neon.pageserver_connstring", "postgresql://settings:6400"),
			setting("neon.safekeepers", "ignored:1"),
			setting("neon.endpoint_storage_addr", "es:9993"),
			setting("neon.endpoint_storage_token", "estok"),
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.PageserverConnstr != "postgresql://top:6400" || !reflect.DeepEqual(p.SafekeeperConnstrings, []string{"sk1:5454", "sk2:5454", "sk3:5454"}) ||
		p.StorageAuthToken != "tok" || p.EndpointStorageAddr != "es:9993" || p.EndpointStorageToken != "estok" {
		t.Errorf("parsed = %+v", p)
	}
	// Top-level endpoint storage fields win over the settings.
	top, tok := "top:1", "toptok"
	s.EndpointStorageAddr, s.EndpointStorageToken = &top, &tok
	if p, err = Parse(s); err != nil || p.EndpointStorageAddr != top || p.EndpointStorageToken != tok {
		t.Errorf("top-level endpoint storage: %+v, %v", p, err)
	}
	// The parsed safekeeper list is a copy: changing it leaves the spec alone.
	p.SafekeeperConnstrings[0] = "changed"
	if s.SafekeeperConnstrings[0] != "sk1:5454" {
		t.Error("Parsed shares the safekeeper slice with the spec")
	}
}

// roundTrip checks that an accepted config re-marshals and re-parses to an equal value.
func roundTrip(t *testing.T, cfg *ComputeConfig) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal accepted config: %v", err)
	}
	again, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("re-parse of %s: %v", b, err)
	}
	if !reflect.DeepEqual(cfg, again) {
		b2, _ := json.Marshal(again)
		t.Fatalf("round trip changed the config:\nfirst  %s\nsecond %s", b, b2)
	}
}

func TestRoundTripFixtures(t *testing.T) {
	ents, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		cfg, err := ParseConfig(readTestdata(t, e.Name()))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		roundTrip(t, cfg)
	}
}

func FuzzParseConfig(f *testing.F) {
	ents, _ := os.ReadDir("testdata")
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".json" {
			f.Add(readTestdata(f, e.Name()))
		}
	}
	for _, name := range []string{"compute_tools_tests_cluster_spec.json", "libs_compute_api_tests_cluster_spec.json"} {
		if b, err := os.ReadFile(filepath.Join(neonFixtureDir, name)); err == nil {
			f.Add([]byte(`{"compute_ctl_config":{"jwks":{"keys":[]}},"spec":` + string(b) + `}`))
		}
	}
	f.Add([]byte(`{"compute_ctl_config":{"jwks":{"keys":["<&>"]}},"spec":{"format_version":1,"suspend_timeout_seconds":1,"cluster":{"roles":[],"databases":[],"settings":[]},"delta_operations":[],"local_proxy_config":{"jwks":[]},"pgbouncer_settings":{},"safekeeper_connstrings":[],"mode":{"Static":" 0/a "}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			return
		}
		if cfg.Spec != nil {
			_, _ = Parse(cfg.Spec) // must not panic
		}
		roundTrip(t, cfg)
	})
}

// TestModeSpellings pins the text of the typed modes: the state record and the logs carry
// them as they were spelled when they were plain strings.
func TestModeSpellings(t *testing.T) {
	b, err := json.Marshal(struct {
		Mode    ModeType    `json:"mode"`
		Storage StorageMode `json:"storage"`
	}{Static(1).Type(), StorageNeon})
	if err != nil || string(b) != `{"mode":"static","storage":"neon"}` {
		t.Errorf("got %s, %v", b, err)
	}
	for m, want := range map[ComputeMode]ModeType{Primary: "primary", Replica: "replica", Static(5): "static"} {
		if m.Type() != want {
			t.Errorf("%v: type %q, want %q", m, m.Type(), want)
		}
	}
	if StorageStandalone != "standalone" {
		t.Errorf("standalone is %q", StorageStandalone)
	}
}
