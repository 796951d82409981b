package pgdata_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/pgdata"
	"github.com/computetools/compute-tools/internal/spec"
)

func parsed(t *testing.T) *spec.Parsed {
	t.Helper()
	s, err := spec.ParseSpec([]byte(`{"format_version": 1, "suspend_timeout_seconds": -1,
	  "cluster": {"roles": [], "databases": [], "settings": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// postgresql.conf refers to the files of this package by the names declared here, and
// the temp override it includes exists (empty) once the conf is written; an override
// already there is kept.
func TestWritePostgresConf(t *testing.T) {
	for _, nosync := range []bool{false, true} {
		d := pgdata.Dir{Path: t.TempDir(), NoSync: nosync}
		if err := d.WritePostgresConf(parsed(t), pgconf.Options{Port: 5432, TLS: true}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(d.File(pgdata.ConfFile))
		if err != nil {
			t.Fatal(err)
		}
		conf := string(b)
		for _, want := range []string{
			"port = 5432\n",
			"ssl_cert_file = '" + pgdata.ServerCertFile + "'\n",
			"ssl_key_file = '" + pgdata.ServerKeyFile + "'\n",
		} {
			if !strings.Contains(conf, want) {
				t.Errorf("postgresql.conf lacks %q:\n%s", want, conf)
			}
		}
		if want := "include_if_exists = '" + pgdata.TempOverrideFile + "'\n"; !strings.HasSuffix(conf, want) {
			t.Errorf("postgresql.conf does not end with %q:\n%s", want, conf)
		}
		if b, err := os.ReadFile(d.File(pgdata.TempOverrideFile)); err != nil || len(b) != 0 {
			t.Errorf("temp override %q, %v; want an empty file", b, err)
		}
		for _, f := range []string{pgdata.ConfFile, pgdata.TempOverrideFile} {
			if m := mode(t, d.File(f)); m != 0o600 {
				t.Errorf("%s mode %v, want 0600", f, m)
			}
		}

		if err := d.WriteTempOverride("neon.max_cluster_size=-1\n"); err != nil {
			t.Fatal(err)
		}
		if err := d.WritePostgresConf(parsed(t), pgconf.Options{}); err != nil {
			t.Fatal(err)
		}
		if got, err := d.TempOverride(); err != nil || got != "neon.max_cluster_size=-1\n" {
			t.Errorf("temp override after a rewrite of the conf: %q, %v", got, err)
		}
		b, _ = os.ReadFile(d.File(pgdata.ConfFile))
		if strings.Contains(string(b), "ssl") || strings.Contains(string(b), "port =") {
			t.Errorf("postgresql.conf not rewritten:\n%s", b)
		}
	}
	if err := (pgdata.Dir{Path: filepath.Join(t.TempDir(), "missing")}).WritePostgresConf(parsed(t), pgconf.Options{}); err == nil {
		t.Error("wrote into a missing directory")
	}
}

func TestTempOverride(t *testing.T) {
	d := pgdata.Dir{Path: t.TempDir(), NoSync: true}
	if _, err := d.TempOverride(); err == nil {
		t.Error("read a missing temp override")
	}
	for _, body := range []string{"a=1\n", ""} {
		if err := d.WriteTempOverride(body); err != nil {
			t.Fatal(err)
		}
		if got, err := d.TempOverride(); err != nil || got != body {
			t.Errorf("temp override %q, %v; want %q", got, err, body)
		}
	}
	if m := mode(t, d.File(pgdata.TempOverrideFile)); m != 0o600 {
		t.Errorf("mode %v", m)
	}
}

func TestWriteAuth(t *testing.T) {
	d := pgdata.Dir{Path: t.TempDir()}
	if err := d.WriteAuth(pgdata.Auth{AdminRole: "cloud_admin", OSUsers: []string{"postgres", "root"}}); err != nil {
		t.Fatal(err)
	}
	hba, _ := pgconf.HBA("cloud_admin")
	ident, _ := pgconf.Ident("cloud_admin", []string{"postgres", "root"})
	for f, want := range map[string]string{pgdata.HBAFile: hba, pgdata.IdentFile: ident} {
		b, err := os.ReadFile(d.File(f))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", f, b, err, want)
		}
		if m := mode(t, d.File(f)); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, m)
		}
	}
	d = pgdata.Dir{Path: t.TempDir()}
	if err := d.WriteAuth(pgdata.Auth{AdminRole: "all", OSUsers: []string{"postgres"}}); err == nil {
		t.Error("accepted admin role all")
	}
	if err := d.WriteAuth(pgdata.Auth{AdminRole: "cloud_admin"}); err == nil {
		t.Error("accepted an empty OS user list")
	}
	if _, err := os.Stat(d.File(pgdata.HBAFile)); err == nil {
		t.Error("pg_hba.conf written for a refused admin role")
	}
}

// After the apply, logical replication subscribers are enabled again (compute_ctl appends
// the line after the start's apply), whatever drop_subscriptions_before_start wrote.
func TestEnableSubscribers(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		changed    bool
	}{
		{"flag set: disabled during the start", "port=5432\nneon.disable_logical_replication_subscribers=true\n", true},
		{"no line at all", "port=5432", true},
		{"already enabled", "neon.disable_logical_replication_subscribers = false\n", false},
		{"enabled, then disabled", "neon.disable_logical_replication_subscribers=false\nneon.disable_logical_replication_subscribers=true\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := pgdata.Dir{Path: t.TempDir()}
			p := filepath.Join(d.Path, "postgresql.conf")
			if err := os.WriteFile(p, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			changed, err := d.EnableSubscribers()
			if err != nil || changed != tc.changed {
				t.Fatalf("changed %v, %v; want %v", changed, err, tc.changed)
			}
			b, _ := os.ReadFile(p)
			if !strings.HasSuffix(strings.TrimSpace(string(b)), "neon.disable_logical_replication_subscribers=false") &&
				!strings.HasSuffix(strings.TrimSpace(string(b)), "neon.disable_logical_replication_subscribers = false") {
				t.Errorf("conf ends with:\n%s", b)
			}
			if again, _ := d.EnableSubscribers(); again {
				t.Error("a second call changed the file again")
			}
		})
	}
	if _, err := (pgdata.Dir{Path: t.TempDir()}).EnableSubscribers(); err == nil {
		t.Error("no postgresql.conf: no error")
	}
}
