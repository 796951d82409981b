package extensions

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/version"
)

// fakePGConfig writes a pg_config script beside a (never run) postgres binary and
// returns the binary's path.
func fakePGConfig(t *testing.T, out string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\nprintf '%s' '" + out + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_config"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "postgres")
}

func TestNewDownloader(t *testing.T) {
	pgbin := fakePGConfig(t, "/share/pg\n/lib/pg\nPostgreSQL 15.8 (Debian 15.8-0+deb12u1)\n")
	var calls []string
	d, err := NewDownloader(context.Background(), pgbin, "http://gw.example/", func(status, ext string) {
		calls = append(calls, status+" "+ext)
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.BaseURL != "http://gw.example/" || d.ShareDir != "/share/pg" || d.PkgLibDir != "/lib/pg" || d.PGMajor != "v15" {
		t.Errorf("downloader = base %q share %q lib %q major %q", d.BaseURL, d.ShareDir, d.PkgLibDir, d.PGMajor)
	}
	if d.BuildTag != version.BuildTag {
		t.Errorf("build tag %q, want %q", d.BuildTag, version.BuildTag)
	}
	if d.Client == nil || d.Client.Timeout != DownloadTimeout {
		t.Errorf("client %+v, want one with timeout %s", d.Client, DownloadTimeout)
	}
	if d.OnRequest == nil {
		t.Fatal("OnRequest not set")
	}
	d.OnRequest("200 OK", "postgis")
	if len(calls) != 1 || calls[0] != "200 OK postgis" {
		t.Errorf("OnRequest calls %v", calls)
	}
}

func TestNewDownloaderWithoutPGConfig(t *testing.T) {
	if _, err := NewDownloader(context.Background(), filepath.Join(t.TempDir(), "postgres"), "", nil); err == nil {
		t.Fatal("missing pg_config accepted")
	}
}

func TestNewDownloaderBadVersion(t *testing.T) {
	pgbin := fakePGConfig(t, "/share\n/lib\nPostgreSQL 9.6\n")
	if _, err := NewDownloader(context.Background(), pgbin, "", nil); err == nil {
		t.Fatal("PostgreSQL 9.6 accepted")
	}
}

// TestClientRedirects: the gateway may redirect within itself, never to another host or
// scheme (an https gateway turned into plain HTTP, or someone else's server).
func TestClientRedirects(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("elsewhere")) }))
	defer other.Close()
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/x", http.StatusFound)
		case "/within":
			http.Redirect(w, r, "/here", http.StatusFound)
		default:
			w.Write([]byte("here"))
		}
	}))
	defer gw.Close()
	c := newClient()
	if _, err := c.Get(gw.URL + "/away"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("redirect to another host: %v", err)
	}
	resp, err := c.Get(gw.URL + "/within")
	if err != nil {
		t.Fatalf("redirect within the gateway: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "here" {
		t.Errorf("body %q", b)
	}
}
