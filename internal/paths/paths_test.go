package paths

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const repoRoot = "../.."

func readLines(t *testing.T, rel string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestPackagingDefaults checks /etc/default/compute-tools against Vars: every variable it
// sets (or shows commented out) has the Go default, and every default an operator may
// change is there.
func TestPackagingDefaults(t *testing.T) {
	vars := Vars()
	assign := regexp.MustCompile(`^#?([A-Z][A-Z0-9_]*)=(.*)$`)
	seen := map[string]bool{}
	for _, l := range readLines(t, "packaging/default/compute-tools") {
		m := assign.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		name, value := m[1], m[2]
		seen[name] = true
		want, ok := vars[name]
		if !ok {
			t.Errorf("packaging default %s=%s has no Go default in paths.Vars", name, value)
			continue
		}
		if value != want {
			t.Errorf("packaging default %s=%q, Go default %q", name, value, want)
		}
	}
	for name := range vars {
		if name == EnvStateDir { // the units and tmpfiles fix it; not an operator setting
			continue
		}
		if !seen[name] {
			t.Errorf("%s is missing from packaging/default/compute-tools", name)
		}
	}
}

// TestUnitFallbacks checks the ${VAR:-default} fallbacks and the state directory in the
// unit files and the tmpfiles entry against the Go defaults.
func TestUnitFallbacks(t *testing.T) {
	vars := Vars()
	units, err := filepath.Glob(filepath.Join(repoRoot, "units", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no unit files: %v", err)
	}
	fallback := regexp.MustCompile(`\$\$?\{([A-Z][A-Z0-9_]*):-([^}]*)\}`)
	stateRef := regexp.MustCompile(`/run/compute(/[^\s'"]*)?(\s|$)`)
	fallbacks := 0
	for _, u := range units {
		rel, _ := filepath.Rel(repoRoot, u)
		for _, l := range readLines(t, rel) {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			for _, m := range fallback.FindAllStringSubmatch(l, -1) {
				fallbacks++
				want, ok := vars[m[1]]
				if !ok {
					t.Errorf("%s: fallback for %s has no Go default", rel, m[1])
				} else if m[2] != want {
					t.Errorf("%s: fallback %s=%q, Go default %q", rel, m[1], m[2], want)
				}
			}
			for _, m := range stateRef.FindAllStringSubmatch(l, -1) {
				path := strings.TrimSpace(m[0])
				switch path {
				case DefaultStateDir:
				default:
					t.Errorf("%s: %s is not a path this package names", rel, path)
				}
			}
			// PID 1 reads an EnvironmentFile= as root, following symbolic links: only the
			// root-owned settings file, never one from a directory postgres can write.
			if v, ok := strings.CutPrefix(l, "EnvironmentFile="); ok && v != "-"+EnvironmentFile {
				t.Errorf("%s: EnvironmentFile=%s, want only -%s", rel, v, EnvironmentFile)
			}
		}
	}
	if fallbacks == 0 {
		t.Error("no ${VAR:-default} fallbacks found in the unit files")
	}
	found := false
	for _, l := range readLines(t, "packaging/tmpfiles/compute-tools.conf") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "d" && f[1] == DefaultStateDir {
			found = true
		}
	}
	if !found {
		t.Errorf("packaging/tmpfiles/compute-tools.conf does not create %s", DefaultStateDir)
	}
}

// TestReadmeDefaults checks the README's table of variables against the Go defaults.
func TestReadmeDefaults(t *testing.T) {
	vars := Vars()
	row := regexp.MustCompile("^\\| (`[A-Z_]+`(?: / `[A-Z_]+`)*) \\| (`[^|]*`) \\|")
	rows := 0
	for _, l := range readLines(t, "README.md") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		names := strings.Split(m[1], " / ")
		values := strings.Split(m[2], " / ")
		if len(names) != len(values) {
			t.Errorf("README row %q: %d names, %d values", l, len(names), len(values))
			continue
		}
		for i, n := range names {
			n, v := strings.Trim(n, "`"), strings.Trim(values[i], "`")
			want, ok := vars[n]
			if !ok {
				continue // COMPUTE_LOG_LEVEL and other settings not given as flags
			}
			rows++
			if v != want {
				t.Errorf("README: %s default %q, Go default %q", n, v, want)
			}
		}
	}
	if rows < len(vars)-1 {
		t.Errorf("README names %d of the %d defaults", rows, len(vars))
	}
}

func TestFileNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{PendingConfigFile("/run/compute"), "/run/compute/config.pending.json"},
		{AppliedConfigFile("/run/compute"), "/run/compute/config.applied.json"},
		{NeonAuthTokenFile("/run/compute"), "/run/compute/neon-auth-token"},
		{RsyslogConfFile("/run/compute"), "/run/compute/rsyslog.conf"},
		{Sibling(DefaultPGBin, "initdb"), "/usr/lib/postgresql/15/bin/initdb"},
		{PGBinDir(DefaultPGBin), "/usr/lib/postgresql/15/bin"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
}

// TestDefaultsUnchanged pins the effective defaults: they are part of the package's
// interface (flags, /etc/default/compute-tools, the README).
func TestDefaultsUnchanged(t *testing.T) {
	want := map[string]string{
		"COMPUTE_STATE_DIR":                     "/run/compute",
		"COMPUTE_CONFIG":                        "/etc/compute/config.json",
		"PGDATA":                                "/var/db/postgres/compute",
		"PGBIN":                                 "/usr/lib/postgresql/15/bin/postgres",
		"COMPUTE_CONNSTR":                       "postgresql://cloud_admin@localhost:55432/postgres?host=/run/compute-postgres",
		"COMPUTE_ID":                            "compute-local",
		"PRIVILEGED_ROLE_NAME":                  "neon_superuser",
		"EXTERNAL_HTTP_PORT":                    "3080",
		"INTERNAL_HTTP_PORT":                    "3081",
		"INTERNAL_HTTP_ADDR":                    "127.0.0.1",
		"INTERNAL_HTTP_USERS":                   "root,postgres,compute-api",
		"INTERNAL_HTTP_ADMIN_USERS":             "root,compute-api",
		"COMPUTE_TLS_POLL_INTERVAL":             "60s",
		"COMPUTE_API_READ_HEADER_TIMEOUT":       "10s",
		"COMPUTE_API_READ_TIMEOUT":              "60s",
		"COMPUTE_API_WRITE_TIMEOUT":             "60s",
		"COMPUTE_API_IDLE_TIMEOUT":              "120s",
		"COMPUTE_API_MAX_CONNECTIONS":           "128",
		"COMPUTE_API_MAX_BODY_BYTES":            "2097152",
		"COMPUTE_API_CONFIGURE_PARSES":          "2",
		"COMPUTE_MONITOR_INTERVAL":              "500ms",
		"COMPUTE_INSTALLED_EXTENSIONS_INTERVAL": "1h",
		"COMPUTE_TRIM_AFTER":                    "30s",
		"COMPUTE_VM_MONITOR_ADDR":               "0.0.0.0:10301",
		"COMPUTE_VM_MONITOR_VSOCK_PORT":         "10301",
		"COMPUTE_VM_MONITOR_CGROUP_UNIT":        "compute-postgres.service",
		"AUTOSCALING":                           "false",
		"COMPUTE_BASEBACKUP_ATTEMPTS":           "11",
		"COMPUTE_PAGESERVER_IDLE_TIMEOUT":       "2m",
		"COMPUTE_SYNC_SAFEKEEPERS_TIMEOUT":      "5m",
		"COMPUTE_CONTROL_PLANE_TIMEOUT":         "30s",
		"COMPUTE_ON_TERMINATED":                 "stop",
		"PGBOUNCER_INI":                         "/etc/pgbouncer.ini",
		"PGBOUNCER_CONNSTR":                     "host=/tmp port=6432 dbname=pgbouncer user=pgbouncer",
		"PGBOUNCER_PID_FILE":                    "/tmp/pgbouncer.pid",
		"LOCAL_PROXY_CONFIG":                    "/etc/local_proxy/config.json",
		"LOCAL_PROXY_PID_FILE":                  "/etc/local_proxy/pid",
		"COMPUTE_RESIZE_SWAP_ON_BIND":           "false",
		"COMPUTE_WARMUP":                        "true",
	}
	got := Vars()
	if len(got) != len(want) {
		t.Errorf("%d defaults, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestRPMFilesPaths checks that the .rpm's copies of the units, generator and environment
// file (scripts/lib.sh, rpm_files) are made with the paths this package names, and that
// scripts/rpm-check.sh expects them.
func TestRPMFilesPaths(t *testing.T) {
	lib := strings.Join(readLines(t, "scripts/lib.sh"), "\n")
	for _, want := range []string{
		"s|" + EnvironmentFile + "|" + RPMEnvironmentFile + "|g",
		"s|" + PGBinDir(DefaultPGBin) + "|" + PGBinDir(RPMPGBin) + "|g",
	} {
		if !strings.Contains(lib, want) {
			t.Errorf("scripts/lib.sh rpm_files lacks the substitution %q", want)
		}
	}
	check := strings.Join(readLines(t, "scripts/rpm-check.sh"), "\n")
	for _, want := range []string{"PGBIN=" + RPMPGBin, "EnvironmentFile=-" + RPMEnvironmentFile} {
		if !strings.Contains(check, want) {
			t.Errorf("scripts/rpm-check.sh does not check %q", want)
		}
	}
}

// TestUnitUsers: the users of compute-api and the vm-monitor are the ones the package
// creates (sysusers, and the postinst fallbacks where there is no systemd-sysusers), the
// ones their units run as, the ones the polkit rule names, and both are in the ident map.
func TestUnitUsers(t *testing.T) {
	sysusers := strings.Join(readLines(t, "packaging/sysusers/compute-tools.conf"), "\n") + "\n"
	rule := strings.Join(readLines(t, "packaging/polkit/50-compute-tools.rules"), "\n")
	deb := strings.Join(readLines(t, "packaging/scripts/postinstall.sh"), "\n")
	rpm := strings.Join(readLines(t, "packaging/scripts/rpm-postinstall.sh"), "\n")
	for unit, u := range map[string]string{"compute-api.service": APIUser, UnitVMMonitor: VMMonitorUser} {
		if !slices.Contains(readLines(t, "units/"+unit), "User="+u) {
			t.Errorf("units/%s does not run as %s", unit, u)
		}
		if !strings.Contains(sysusers, "\nu "+u+" - ") {
			t.Errorf("sysusers does not create %s", u)
		}
		if !strings.Contains(rule, `subject.user == "`+u+`"`) && !strings.Contains(rule, `subject.user != "`+u+`"`) {
			t.Errorf("the polkit rule does not name %s", u)
		}
		if !strings.Contains(deb, "getent passwd "+u) || !strings.Contains(rpm, "getent passwd "+u) {
			t.Errorf("a postinst has no fallback for %s", u)
		}
		if !slices.Contains(AdminOSUsers(), u) {
			t.Errorf("%s is not in AdminOSUsers", u)
		}
	}
}

// TestRsyslogUnit ties compute-rsyslog.service to the names the steps use: the binary
// they check for, the work directory they render (the unit's StateDirectory=), the
// configuration file and the user (postgres, the writer of that file).
func TestRsyslogUnit(t *testing.T) {
	unit := strings.Join(readLines(t, "units/"+UnitRsyslog), "\n")
	for _, want := range []string{
		"exec " + Rsyslogd + " -N1 -f \"$${" + EnvStateDir + ":-" + DefaultStateDir + "}/" + filepath.Base(RsyslogConfFile(DefaultStateDir)) + "\"",
		"exec " + Rsyslogd + " -n -iNONE -f \"$${" + EnvStateDir + ":-" + DefaultStateDir + "}/" + filepath.Base(RsyslogConfFile(DefaultStateDir)) + "\"",
		"\nStateDirectory=" + strings.TrimPrefix(RsyslogWorkDir, "/var/lib/") + "\n",
		"\nUser=" + DefaultPGUser + "\n",
		"\nPartOf=" + UnitTarget + "\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("units/%s lacks %q", UnitRsyslog, want)
		}
	}
}
