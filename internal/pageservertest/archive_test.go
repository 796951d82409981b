package pageservertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pgtest"
)

// archiveFiles unpacks a gzip'd tar into name -> content.
func archiveFiles(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(hdr.Name, "./")] = b
	}
}

// hbaMethods returns the auth methods of the local and the host lines of pg_hba.conf.
func hbaMethods(hba string) (local, host []string) {
	for _, l := range strings.Split(hba, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "local":
			local = append(local, f[len(f)-1])
		case "host":
			host = append(host, f[len(f)-1])
		}
	}
	return local, host
}

func TestMakeBasebackupArchiveWith(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err.Error())
	}
	if _, err := os.Stat(filepath.Join(BinDir(), "pg_basebackup")); err != nil {
		t.Skipf("no pg_basebackup: %v", err)
	}
	const needle = "pageservertest-marker-5f1c"
	for _, tc := range []struct {
		name     string
		opts     ArchiveOptions
		wantHost string
		wantErr  string
	}{
		{"defaults", ArchiveOptions{}, "trust", ""},
		{"md5 over tcp, a marker table", ArchiveOptions{AuthHost: "md5", SetupSQL: []string{
			"CREATE TABLE marker (v text)", "INSERT INTO marker VALUES ('" + needle + "')",
		}}, "md5", ""},
		{"bad setup sql", ArchiveOptions{SetupSQL: []string{"CREATE TABLE"}}, "", "setup sql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			archive, err := MakeBasebackupArchiveWith(ctx, BinDir(), tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			files := archiveFiles(t, archive)
			local, host := hbaMethods(string(files["pg_hba.conf"]))
			if len(local) == 0 || len(host) == 0 {
				t.Fatalf("pg_hba.conf has %d local and %d host lines:\n%s", len(local), len(host), files["pg_hba.conf"])
			}
			for _, m := range local {
				if m != "trust" {
					t.Errorf("local line with %q, want trust", m)
				}
			}
			for _, m := range host {
				if m != tc.wantHost {
					t.Errorf("host line with %q, want %q", m, tc.wantHost)
				}
			}
			// The marker row is in a heap file of the data (not only in the WAL).
			found := false
			for name, b := range files {
				if strings.HasPrefix(name, "base/") && bytes.Contains(b, []byte(needle)) {
					found = true
				}
			}
			if found != (len(tc.opts.SetupSQL) > 0) {
				t.Errorf("marker in the data files: %v, want %v", found, len(tc.opts.SetupSQL) > 0)
			}
		})
	}
}
