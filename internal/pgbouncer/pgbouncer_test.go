package pgbouncer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/certtest"
	"github.com/computetools/compute-tools/internal/pgbouncer"
	"github.com/computetools/compute-tools/internal/pgbouncer/pgbouncertest"
	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
)

func opts(pb *pgbouncertest.Instance) pgbouncer.Options {
	return pgbouncer.Options{IniPath: pb.IniPath, Connstr: pb.Connstr(), Delay: 10 * time.Millisecond}
}

func TestApplyReloads(t *testing.T) {
	pb := pgbouncertest.Start(t)
	if got := pb.Setting(t, "default_pool_size"); got != "20" {
		t.Fatalf("before: default_pool_size = %q", got)
	}
	settings := spec.OrderedStringMap{{Key: "default_pool_size", Value: "42"}, {Key: "max_client_conn", Value: "321"}}
	if err := pgbouncer.Apply(context.Background(), opts(pb), settings, nil); err != nil {
		t.Fatal(err)
	}
	if got := pb.Setting(t, "default_pool_size"); got != "42" {
		t.Errorf("default_pool_size = %q, want 42", got)
	}
	if got := pb.Setting(t, "max_client_conn"); got != "321" {
		t.Errorf("max_client_conn = %q, want 321", got)
	}
	ini, err := os.ReadFile(pb.IniPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default_pool_size = 42\n", "max_client_conn = 321\n", "; a comment that must survive\n", "[databases]\n"} {
		if !strings.Contains(string(ini), want) {
			t.Errorf("ini lacks %q:\n%s", want, ini)
		}
	}
	if strings.Contains(string(ini), "default_pool_size = 20") {
		t.Errorf("old value left in the ini:\n%s", ini)
	}
}

func TestApplyTLSKeyMissing(t *testing.T) {
	pb := pgbouncertest.Start(t)
	dir := pb.Dir
	// The TLS files of a real certificate are not needed for the ini: pgbouncer reads
	// them at RELOAD, and refuses the reload when they are unusable (the next test covers
	// a refusal); here the key is missing at first and Apply must wait, then time out.
	tls := &spec.TLSConfig{CertPath: filepath.Join(dir, "server.crt"), KeyPath: filepath.Join(dir, "server.key")}
	o := opts(pb)
	o.KeyWait = 50 * time.Millisecond
	before, _ := os.ReadFile(pb.IniPath)
	err := pgbouncer.Apply(context.Background(), o, spec.OrderedStringMap{{Key: "default_pool_size", Value: "7"}}, tls)
	if err == nil || !strings.Contains(err.Error(), "TLS key file") {
		t.Fatalf("Apply without the key file = %v, want a TLS key file error", err)
	}
	after, _ := os.ReadFile(pb.IniPath)
	if string(after) != string(before) {
		t.Errorf("ini changed although the key never came:\n%s", after)
	}
}

func TestApplyAbsentPgbouncer(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	const body = "[pgbouncer]\nlisten_port = 6432\n"
	if err := os.WriteFile(ini, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	port := pgbouncertest.FreePort(t)
	o := pgbouncer.Options{IniPath: ini, Connstr: "host=127.0.0.1 dbname=pgbouncer user=postgres sslmode=disable port=" + strconv.Itoa(port), Attempts: 2, Delay: 10 * time.Millisecond}
	err := pgbouncer.Apply(context.Background(), o, spec.OrderedStringMap{{Key: "default_pool_size", Value: "5"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "connect to pgbouncer (2 tries)") {
		t.Fatalf("Apply = %v, want a connect error", err)
	}
	if b, _ := os.ReadFile(ini); string(b) != body {
		t.Errorf("ini written although pgbouncer is absent:\n%s", b)
	}
}

func TestApplyUnwritableIni(t *testing.T) {
	pb := pgbouncertest.Start(t)
	o := opts(pb)
	o.IniPath = filepath.Join(pb.Dir, "missing", "pgbouncer.ini")
	err := pgbouncer.Apply(context.Background(), o, spec.OrderedStringMap{{Key: "default_pool_size", Value: "9"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "pgbouncer ini") {
		t.Fatalf("Apply = %v, want an ini error", err)
	}
	if got := pb.Setting(t, "default_pool_size"); got != "20" {
		t.Errorf("default_pool_size = %q, want the old 20", got)
	}
	// A directory in the file's place.
	o.IniPath = pb.Dir
	if err := pgbouncer.Apply(context.Background(), o, spec.OrderedStringMap{{Key: "default_pool_size", Value: "9"}}, nil); err == nil {
		t.Fatal("Apply with a directory as the ini succeeded")
	}
}

func TestApplyRefusedSetting(t *testing.T) {
	pb := pgbouncertest.Start(t)
	err := pgbouncer.Apply(context.Background(), opts(pb), spec.OrderedStringMap{{Key: "pool_mode", Value: "no-such-mode"}}, nil)
	if !errors.Is(err, pgbouncer.ErrRefused) {
		t.Fatalf("Apply = %v, want ErrRefused", err)
	}
	if got := pb.Setting(t, "pool_mode"); got != "session" {
		t.Errorf("pool_mode = %q, want the old session", got)
	}
	// pgbouncer is still there and takes a good setting afterwards.
	if err := pgbouncer.Apply(context.Background(), opts(pb), spec.OrderedStringMap{{Key: "pool_mode", Value: "transaction"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := pb.Setting(t, "pool_mode"); got != "transaction" {
		t.Errorf("pool_mode = %q, want transaction", got)
	}
}

func TestApplyBadInputWritesNothing(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	const body = "[pgbouncer]\nlisten_port = 6432\n"
	if err := os.WriteFile(ini, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []spec.OrderedStringMap{
		{{Key: "a b", Value: "1"}},
		{{Key: "[databases]", Value: "1"}},
		{{Key: "ok", Value: "1"}, {Key: "listen_port", Value: "1\n[databases]\nx = host=evil"}},
	} {
		if err := pgbouncer.UpdateIni(ini, s); err == nil {
			t.Errorf("UpdateIni(%v) succeeded", s)
		}
	}
	if b, _ := os.ReadFile(ini); string(b) != body {
		t.Errorf("ini changed by refused settings:\n%s", b)
	}
}

func TestUpdateIniText(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"no section", "[databases]\nx = host=a\n", "[databases]\nx = host=a\n[pgbouncer]\nb = 2\na = 1\n"},
		{"empty file", "", "[pgbouncer]\nb = 2\na = 1\n"},
		{"replace and add at the end of the section",
			"[PgBouncer]\n; c\nA=0\nlisten_port = 1\n\n[users]\nu = x\n",
			"[PgBouncer]\n; c\nA = 1\nlisten_port = 1\nb = 2\n\n[users]\nu = x\n"},
		{"repeated name", "[pgbouncer]\na = 0\na = 3\n", "[pgbouncer]\na = 1\nb = 2\n"},
		{"other section's name untouched", "[databases]\na = host=x\n[pgbouncer]\n", "[databases]\na = host=x\n[pgbouncer]\nb = 2\na = 1\n"},
		{"no final newline", "[pgbouncer]\nx = 1", "[pgbouncer]\nx = 1\nb = 2\na = 1\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ini := filepath.Join(t.TempDir(), "pgbouncer.ini")
			if err := os.WriteFile(ini, []byte(c.in), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := pgbouncer.UpdateIni(ini, spec.OrderedStringMap{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}}); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(ini)
			if string(got) != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

func TestApplyTLS(t *testing.T) {
	pb := pgbouncertest.Start(t)
	certPath, keyPath := certtest.Write(t, pb.Dir, 1)
	uid, gid := pgtest.OSUserIDs(t)
	for _, f := range []string{certPath, keyPath} {
		if err := os.Chown(f, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	tls := &spec.TLSConfig{CertPath: certPath, KeyPath: keyPath}
	if err := pgbouncer.Apply(context.Background(), opts(pb), spec.OrderedStringMap{{Key: "default_pool_size", Value: "11"}}, tls); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"client_tls_sslmode": "allow", "client_tls_cert_file": certPath, "client_tls_key_file": keyPath, "default_pool_size": "11"} {
		if got := pb.Setting(t, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
