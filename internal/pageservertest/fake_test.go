package pageservertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func connect(t *testing.T, f *FakePageserver, params map[string]string, password string) (*pgconn.PgConn, error) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(f.Connstr() + "?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	return pgconn.ConnectConfig(context.Background(), cfg)
}

func TestFakeChecksStartupAndQuery(t *testing.T) {
	archive := MustBuildArchive(t, []Entry{{Name: "PG_VERSION", Body: "15\n"}})
	f := Start(t, Options{Password: "tok", Archive: archive})
	ctx := context.Background()

	if _, err := connect(t, f, map[string]string{"options": "-c neon.compute_mode=primary"}, "tok"); err == nil || !strings.Contains(err.Error(), "application_name") {
		t.Errorf("no application_name: %v", err)
	}
	if _, err := connect(t, f, map[string]string{"application_name": AppName}, "bad"); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("bad password: %v", err)
	}

	c, err := connect(t, f, map[string]string{"application_name": AppName, "options": "-c neon.compute_mode=primary"}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var buf bytes.Buffer
	if _, err := c.CopyTo(ctx, &buf, "basebackup aa bb --gzip --replica"); err == nil || !strings.Contains(err.Error(), "--replica") {
		t.Errorf("primary with --replica: %v", err)
	}
	if _, err := c.CopyTo(ctx, &buf, "basebackup aa bb"); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("no --gzip: %v", err)
	}
	buf.Reset()
	if _, err := c.CopyTo(ctx, &buf, "basebackup aa bb 0/1 --gzip"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), archive) {
		t.Errorf("served %d bytes, want the %d of the archive", buf.Len(), len(archive))
	}
	if got := f.Queries(); len(got) != 3 || got[2] != "basebackup aa bb 0/1 --gzip" {
		t.Errorf("queries %q", got)
	}
	if s := f.Sessions(); len(s) != 3 || s[0].Password != "" || s[1].Password != "bad" || s[2].Password != "tok" {
		t.Errorf("sessions %+v", s)
	}
}

func TestPageserverShape(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, name := range []string{"PG_VERSION", "postgresql.conf", "pg_dynshmem/", "pg_dynshmem/junk", "global/pg_control"} {
		hdr := &tar.Header{Name: name, Mode: 0o600, Typeflag: tar.TypeReg, Size: 1}
		if strings.HasSuffix(name, "/") {
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size == 1 {
			tw.Write([]byte("x"))
		}
	}
	tw.Close()
	out, err := pageserverShape(&in)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
	if got, want := strings.Join(names, " "), "PG_VERSION pg_dynshmem/ global/pg_control neon.signal"; got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
}
