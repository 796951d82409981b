package pageserver_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageservertest"
)

type entry = pageservertest.Entry

func TestMaliciousArchivesRefused(t *testing.T) {
	// Paths outside PGDATA that an escape would create; checked after every case.
	outside := filepath.Join(os.TempDir(), "storage-untar-escape-check")
	os.Remove(outside)
	tests := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dot dot", []entry{{Name: "../evil", Body: "x"}}, "escapes"},
		{"dot dot inside", []entry{{Name: "base/../../evil", Body: "x"}}, "escapes"},
		{"absolute", []entry{{Name: outside, Body: "x"}}, "absolute"},
		{"symlink to /etc then a file through it", []entry{
			{Name: "etc", Type: tar.TypeSymlink, Linkname: "/etc"},
			{Name: "etc/storage-untar-evil", Body: "x"},
		}, "only relative targets"},
		{"symlink upwards", []entry{{Name: "up", Type: tar.TypeSymlink, Linkname: "../.."}}, `".." is not allowed`},
		{"file through an inside symlink", []entry{
			{Name: "real/", Type: tar.TypeDir},
			{Name: "lnk", Type: tar.TypeSymlink, Linkname: "real"},
			{Name: "lnk/file", Body: "x"},
		}, "through the symbolic link"},
		{"hardlink to an absolute path", []entry{{Name: "pw", Type: tar.TypeLink, Linkname: "/etc/passwd"}}, "outside"},
		{"hardlink upwards", []entry{{Name: "pw", Type: tar.TypeLink, Linkname: "../outside"}}, "outside"},
		{"char device", []entry{{Name: "null", Type: tar.TypeChar}}, "device"},
		{"block device", []entry{{Name: "sda", Type: tar.TypeBlock}}, "device"},
		{"fifo", []entry{{Name: "pipe", Type: tar.TypeFifo}}, "fifo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			archive := pageservertest.MustBuildArchive(t, tc.entries)
			f := pageservertest.Start(t, pageservertest.Options{Password: token, Archive: archive})
			root := t.TempDir()
			pgdata := filepath.Join(root, "a", "pgdata")
			o := opts(f, pgdata)
			o.Attempts = 3
			st, err := pageserver.Basebackup(context.Background(), o)
			var unsafe *pageserver.UnsafeEntryError
			if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want an unsafe entry error containing %q", err, tc.want)
			}
			t.Logf("error: %v", err)
			if st.Attempts != 1 || f.Basebackups() != 1 {
				t.Errorf("an unsafe archive was retried: attempts %d, queries %d", st.Attempts, f.Basebackups())
			}
			// Nothing beside pgdata, nothing in /etc or the temp dir.
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Errorf("root holds %v", ents)
			}
			if ents, _ := os.ReadDir(filepath.Join(root, "a")); len(ents) != 1 {
				t.Errorf("parent of pgdata holds %v", ents)
			}
			for _, p := range []string{outside, "/etc/storage-untar-evil"} {
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s exists (or %v)", p, err)
					os.Remove(p)
				}
			}
		})
	}
}

func TestUntarModesAndRerun(t *testing.T) {
	archive := pageservertest.MustBuildArchive(t, []entry{
		{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		{Name: "./base/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "base/1/112", Body: "data", Mode: 0o644}, // parent dir not in the archive
		{Name: "bin/tool", Body: "#!/bin/sh\n", Mode: 0o755},
		{Name: "ro", Body: "r", Mode: 0o400},
		{Name: "link", Type: tar.TypeSymlink, Linkname: "base/1/112"},
		{Name: "hard", Type: tar.TypeLink, Linkname: "base/1/112"},
	})
	dir := filepath.Join(t.TempDir(), "pgdata")
	// Twice: the second run overwrites what the first left, as a retry does.
	for run := range 2 {
		if err := pageserver.Untar(bytes.NewReader(archive), dir); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	wantModes := map[string]fs.FileMode{
		"base": fs.ModeDir | 0o700, "base/1": fs.ModeDir | 0o700, "bin": fs.ModeDir | 0o700,
		"base/1/112": 0o600, "bin/tool": 0o700, "ro": 0o600, "hard": 0o600,
	}
	for name, want := range wantModes {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "link")); err != nil || target != "base/1/112" {
		t.Errorf("link -> %q, %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hard")); err != nil || string(b) != "data" {
		t.Errorf("hard: %q, %v", b, err)
	}
}

func TestUntarReplacesLeftoverSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	// As if left by something else: a symlink where the archive has a file.
	if err := os.Symlink(victim, filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
	archive := pageservertest.MustBuildArchive(t, []entry{{Name: "PG_VERSION", Body: "15\n"}})
	if err := pageserver.Untar(bytes.NewReader(archive), dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("wrote through the symlink: victim holds %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "PG_VERSION")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("PG_VERSION: %v, %v", fi, err)
	}
}

func TestUntarBadStreams(t *testing.T) {
	good := pageservertest.MustBuildArchive(t, []entry{{Name: "f", Body: strings.Repeat("x", 100000)}})
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-6] ^= 0xff // the gzip CRC
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"not gzip", []byte("plain text"), "gzip"},
		{"truncated", good[:len(good)/2], "unexpected EOF"},
		{"bad checksum", corrupt, "checksum"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := pageserver.Untar(bytes.NewReader(tc.data), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
