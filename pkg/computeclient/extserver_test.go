package computeclient_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/api"
	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/klauspost/compress/zstd"
)

type specSource struct{ s *spec.ComputeSpec }

func (s specSource) CurrentSpec() (*spec.ComputeSpec, error) { return s.s, nil }

func zstdTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(tb.Bytes(), nil)
}

// The internal port's extension server through the client: a download, a name the spec
// does not allow, no spec, and a gateway error.
func TestInternalDownloadExtension(t *testing.T) {
	archive := zstdTar(t, map[string]string{
		"share/extension/foo.control": "default_version = '1.0'\n",
		"lib/foo.so":                  "\x7fELF",
	})
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/v15/extensions/foo.tar.zst"):
			_, _ = w.Write(archive)
		case strings.HasSuffix(r.URL.Path, "/v15/extensions/broken.tar.zst"):
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer gateway.Close()
	dir := t.TempDir()
	lib, share := filepath.Join(dir, "lib"), filepath.Join(dir, "share")
	remote := &spec.RemoteExtSpec{
		PublicExtensions: []string{"foo", "broken"},
		LibraryIndex:     map[string]string{"foo": "foo", "broken": "broken"},
		ExtensionData: map[string]spec.ExtensionData{
			"foo":    {ControlData: map[string]string{"foo.control": "x"}, ArchivePath: "foo.tar.zst"},
			"broken": {ControlData: map[string]string{"broken.control": "x"}, ArchivePath: "broken.tar.zst"},
		},
	}
	downloader := func() *extensions.Downloader {
		return &extensions.Downloader{BaseURL: gateway.URL + "/", PGMajor: "v15", PkgLibDir: lib, ShareDir: share,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	ctx := context.Background()

	e := newEnv(t, func(o *api.Options) {
		o.ExtensionServer = extensions.NewHandler(specSource{&spec.ComputeSpec{RemoteExtensions: remote}}, downloader())
	})
	if err := e.internal.DownloadExtension(ctx, "foo.so", true); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(lib, "foo.so")); err != nil || string(b) != "\x7fELF" {
		t.Fatalf("library not installed: %q %v", b, err)
	}
	wantError(t, e.internal.DownloadExtension(ctx, "postgis", false), 404, "")
	err := e.internal.DownloadExtension(ctx, "broken", false)
	wantError(t, err, 500, "")

	nospec := newEnv(t, func(o *api.Options) { o.ExtensionServer = extensions.NewHandler(noSpec{}, downloader()) })
	wantError(t, nospec.internal.DownloadExtension(ctx, "foo", false), 409, "information about remote extensions is unavailable")
}
