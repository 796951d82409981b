package extensions

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// preloadSpec preloads foo (downloadable), libbar (its archive is missing at the
// gateway) and neon (never fetched).
func preloadSpec(libs string) *spec.ComputeSpec {
	s := &spec.ComputeSpec{RemoteExtensions: remoteSpec()}
	s.Cluster.Settings = spec.GenericOptions{{Name: "shared_preload_libraries", Value: ptr(libs), Vartype: "string"}}
	return s
}

func TestPrepare(t *testing.T) {
	g := newGateway(t)
	archive := fooArchive(t)
	g.set("foo", archive)
	d := newDownloader(t, g)

	st, err := Prepare(context.Background(), d, preloadSpec("neon,foo,libbar"))
	if err != nil {
		t.Fatal(err)
	}
	size := uint64(len(archive))
	if st.NumExtDownloaded != 1 || st.LargestExtSize != size || st.TotalExtDownloadSize != size {
		t.Errorf("stats = %+v, want 1 download of %d bytes", st, size)
	}
	// Control files of the allowed extensions, then foo's archive over them (existing
	// files are kept by WriteControlFiles, but the archive replaces them).
	ext := filepath.Join(d.ShareDir, "extension")
	if got := listDir(t, ext); !slices.Equal(got, []string{"bar.control", "foo--1.0.sql", "foo.control"}) {
		t.Errorf("share/extension = %v", got)
	}
	if _, err := os.Stat(filepath.Join(d.PkgLibDir, "foo.so")); err != nil {
		t.Errorf("foo.so not unpacked: %v", err)
	}
	if g.count() != 2 {
		t.Errorf("gateway requests = %d, want 2 (foo, bar)", g.count())
	}

	var m state.Metrics
	st.Apply(&m)
	if m.NumExtDownloaded != 1 || m.TotalExtDownloadSize != size || m.LargestExtSize != size || m.LoadExtMs != st.LoadExtMs {
		t.Errorf("Apply = %+v", m)
	}
}

func TestPrepareDisallowedLibraryFails(t *testing.T) {
	g := newGateway(t)
	d := newDownloader(t, g)
	_, err := Prepare(context.Background(), d, preloadSpec("foo,baz"))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "preload library baz: extension baz is not found") {
		t.Fatalf("err = %v, want baz not allowed", err)
	}
	if g.count() != 0 {
		t.Errorf("gateway requests = %d, want none", g.count())
	}
}

func TestPrepareWithoutRemoteStorage(t *testing.T) {
	d := newDownloader(t, nil)
	st, err := Prepare(context.Background(), d, preloadSpec("foo,baz"))
	if err != nil || st != (Stats{}) {
		t.Fatalf("Prepare = %+v, %v; want only control files", st, err)
	}
	if got := listDir(t, filepath.Join(d.ShareDir, "extension")); !slices.Equal(got, []string{"bar.control", "foo.control"}) {
		t.Errorf("share/extension = %v", got)
	}
}

func TestPrepareWithoutRemoteExtensions(t *testing.T) {
	d := newDownloader(t, nil)
	st, err := Prepare(context.Background(), d, &spec.ComputeSpec{})
	if err != nil || st != (Stats{}) {
		t.Fatalf("Prepare = %+v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(d.ShareDir, "extension")); !os.IsNotExist(err) {
		t.Errorf("share/extension created without remote extensions: %v", err)
	}
}

func TestPGMajor(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"PostgreSQL 15.18 (Debian 15.18-0+deb12u1)", "v15"},
		{"PostgreSQL 17.2\n", "v17"},
		{"PostgreSQL 14beta1", "v14"},
		{"PostgreSQL 9.6.1", ""},
		{"postgres 15", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := PGMajor(tt.in)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("PGMajor(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDiscoverPGConfig(t *testing.T) {
	const pgConfig = "/usr/lib/postgresql/15/bin/pg_config"
	if _, err := os.Stat(pgConfig); err != nil {
		t.Skipf("PostgreSQL 15 pg_config not installed: %v", err)
	}
	got, err := DiscoverPGConfig(context.Background(), pgConfig)
	if err != nil {
		t.Fatal(err)
	}
	// Compare with what pg_config says when asked one thing at a time.
	for flag, want := range map[string]string{"--sharedir": got.ShareDir, "--pkglibdir": got.PkgLibDir} {
		out, err := exec.Command(pgConfig, flag).Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(out)) != want {
			t.Errorf("%s = %q, DiscoverPGConfig gave %q", flag, out, want)
		}
	}
	if got.Major != "v15" {
		t.Errorf("Major = %q, want v15", got.Major)
	}
	if _, err := DiscoverPGConfig(context.Background(), filepath.Join(t.TempDir(), "pg_config")); err == nil {
		t.Error("missing pg_config accepted")
	}
}
