package extensions

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/klauspost/compress/zstd"
)

func ptr[T any](v T) *T { return &v }

// entry is one member of a test archive.
type entry struct {
	name string
	body string
	typ  byte // tar.TypeReg when 0
	link string
}

// buildArchive makes a zstd-compressed tar, the gateway's format.
func buildArchive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var zb bytes.Buffer
	zw, err := zstd.NewWriter(&zb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return zb.Bytes()
}

// fooArchive is an SQL-only extension plus a fake library.
func fooArchive(t *testing.T) []byte {
	return buildArchive(t,
		entry{name: "share/", typ: tar.TypeDir},
		entry{name: "share/extension/", typ: tar.TypeDir},
		entry{name: "share/extension/foo.control", body: "default_version = '1.0'\nrelocatable = true\n"},
		entry{name: "share/extension/foo--1.0.sql", body: "CREATE FUNCTION foo() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"},
		entry{name: "lib/", typ: tar.TypeDir},
		entry{name: "lib/foo.so", body: "\x7fELF not really"},
		entry{name: "lib/foo.so.1", typ: tar.TypeSymlink, link: "foo.so"},
		entry{name: "README", body: "ignored"},
	)
}

// gateway is a fake extension storage gateway.
type gateway struct {
	mu       sync.Mutex
	files    map[string][]byte // URL path → archive
	fail     map[string]int    // URL path → status to answer
	requests []string
	srv      *httptest.Server
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{files: map[string][]byte{}, fail: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.requests = append(g.requests, r.Method+" "+r.URL.Path)
		body, ok := g.files[r.URL.Path]
		status := g.fail[r.URL.Path]
		g.mu.Unlock()
		switch {
		case status != 0:
			http.Error(w, "boom", status)
		case !ok:
			http.NotFound(w, r)
		default:
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) set(ext string, body []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.files["/gw/latest/amd64/v15/extensions/"+ext+".tar.zst"] = body
}

func (g *gateway) setFail(ext string, status int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := "/gw/latest/amd64/v15/extensions/" + ext + ".tar.zst"
	if status == 0 {
		delete(g.fail, p)
	} else {
		g.fail[p] = status
	}
}

func (g *gateway) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.requests)
}

// newDownloader returns a downloader into fresh directories.
func newDownloader(t *testing.T, g *gateway) *Downloader {
	root := t.TempDir()
	d := &Downloader{
		BuildTag:  "latest",
		PGMajor:   "v15",
		Arch:      "amd64",
		PkgLibDir: filepath.Join(root, "lib"),
		ShareDir:  filepath.Join(root, "share"),
	}
	if g != nil {
		d.BaseURL = g.srv.URL + "/gw/"
		d.Client = g.srv.Client()
	}
	if err := os.MkdirAll(d.PkgLibDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// remoteSpec allows foo (public) and bar (custom); baz has data but is not listed.
func remoteSpec() *spec.RemoteExtSpec {
	return &spec.RemoteExtSpec{
		PublicExtensions: []string{"foo"},
		CustomExtensions: []string{"bar", "nodata"},
		LibraryIndex:     map[string]string{"foo": "foo", "libbar": "bar", "baz": "baz", "nodata": "nodata"},
		ExtensionData: map[string]spec.ExtensionData{
			"foo": {ControlData: map[string]string{"foo.control": "comment = 'foo'\n"}},
			"bar": {ControlData: map[string]string{"bar.control": "comment = 'bar'\n"}},
			"baz": {ControlData: map[string]string{"baz.control": "comment = 'baz'\n"}},
		},
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		isLib   bool
		want    string
		wantErr string
	}{
		{"foo", false, "foo", ""},
		{"bar", false, "bar", ""},
		{"foo", true, "foo", ""},
		{"foo.so", true, "foo", ""},
		{"foo.so.1.2", true, "foo", ""},
		{"libbar.so", true, "bar", ""},
		{"baz", false, "", "extension baz is not found"},
		{"baz.so", true, "", "extension baz is not found"},
		{"nope.so", true, "", "library nope is not found"},
		{"nope", false, "", "extension nope is not found"},
		{"nodata", false, "", "real_ext_name nodata is not found"},
		{"libbar", false, "", "extension libbar is not found"},
	}
	for _, tt := range tests {
		got, err := Resolve(remoteSpec(), tt.name, tt.isLib)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrNotFound) {
				t.Errorf("Resolve(%q, %v) = %q, %v; want NotFound %q", tt.name, tt.isLib, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q, %v) = %q, %v; want %q", tt.name, tt.isLib, got, err, tt.want)
		}
	}
	if _, err := Resolve(nil, "foo", false); !errors.Is(err, ErrNoRemoteSpec) {
		t.Errorf("Resolve(nil spec) = %v, want ErrNoRemoteSpec", err)
	}
}

func TestWriteControlFiles(t *testing.T) {
	data := map[string]spec.ExtensionData{
		"pub":    {ControlData: map[string]string{"pub.control": "pub"}},
		"cust":   {ControlData: map[string]string{"cust.control": "cust"}},
		"other":  {ControlData: map[string]string{"other.control": "other"}},
		"multi2": {ControlData: map[string]string{"m.control": "m", "m--1.0.sql": "sql"}},
	}
	tests := []struct {
		name   string
		public []string
		custom []string
		want   []string
	}{
		{"both lists", []string{"pub", "multi2"}, []string{"cust"}, []string{"cust.control", "m--1.0.sql", "m.control", "pub.control"}},
		{"no public list: all", nil, []string{"cust"}, []string{"cust.control", "m--1.0.sql", "m.control", "other.control", "pub.control"}},
		{"no custom list: all", []string{"pub"}, nil, []string{"cust.control", "m--1.0.sql", "m.control", "other.control", "pub.control"}},
		{"empty lists: none", []string{}, []string{}, nil},
		{"only public", []string{"pub"}, []string{}, []string{"pub.control"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			share := t.TempDir()
			s := &spec.RemoteExtSpec{PublicExtensions: tt.public, CustomExtensions: tt.custom, ExtensionData: data}
			if err := WriteControlFiles(share, s); err != nil {
				t.Fatal(err)
			}
			if got := listDir(t, filepath.Join(share, "extension")); !slices.Equal(got, tt.want) {
				t.Errorf("files = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWriteControlFilesKeepsExistingAndRefusesTraversal(t *testing.T) {
	share := t.TempDir()
	dir := filepath.Join(share, "extension")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "foo.control"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &spec.RemoteExtSpec{
		PublicExtensions: []string{"foo"},
		ExtensionData: map[string]spec.ExtensionData{"foo": {ControlData: map[string]string{
			"foo.control":      "new",
			"foo--1.0.sql":     "sql",
			"../escape.sql":    "bad",
			"sub/x.control":    "bad",
			"..":               "bad",
			"":                 "bad",
			"..hidden.control": "bad",
		}}},
	}
	err := WriteControlFiles(share, s)
	if err == nil {
		t.Fatal("want an error for the refused names")
	}
	for _, n := range []string{`"../escape.sql"`, `"sub/x.control"`, `".."`, `""`} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "foo.control")); string(b) != "original" {
		t.Errorf("existing file overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "foo--1.0.sql")); string(b) != "sql" {
		t.Errorf("foo--1.0.sql = %q, want written", b)
	}
	if _, err := os.Stat(filepath.Join(share, "escape.sql")); !os.IsNotExist(err) {
		t.Errorf("file written outside the extension directory: %v", err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"foo--1.0.sql", "foo.control"}) {
		t.Errorf("files = %v", got)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPreloadLibraries(t *testing.T) {
	index := map[string]string{"pg_cron": "pg_cron", "timescaledb": "timescaledb", "neon": "neon", "anon": "anon"}
	tests := []struct {
		name     string
		settings string // "" = no setting
		conf     string
		noRemote bool
		want     []string
	}{
		{name: "nothing"},
		{name: "settings", settings: "neon, pg_cron,pg_stat_statements", want: []string{"pg_cron"}},
		{name: "conf last line wins", conf: "shared_preload_libraries='anon'\nfoo=1\nshared_preload_libraries = 'timescaledb,neon'\n", want: []string{"timescaledb"}},
		{name: "both, deduplicated", settings: "pg_cron,timescaledb", conf: "shared_preload_libraries='timescaledb, anon'", want: []string{"pg_cron", "timescaledb", "anon"}},
		{name: "quoted names", settings: `"pg_cron", "anon"`, want: []string{"pg_cron", "anon"}},
		{name: "commented line ignored", conf: "#shared_preload_libraries='anon'", want: nil},
		{name: "no remote extensions", settings: "pg_cron", noRemote: true, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &spec.ComputeSpec{}
			if !tt.noRemote {
				s.RemoteExtensions = &spec.RemoteExtSpec{LibraryIndex: index}
			}
			if tt.settings != "" {
				s.Cluster.Settings = spec.GenericOptions{
					{Name: "shared_preload_libraries", Value: ptr(tt.settings), Vartype: "string"},
				}
			}
			if tt.conf != "" {
				s.Cluster.PostgresqlConf = ptr(tt.conf)
			}
			if got := PreloadLibraries(s); !slices.Equal(got, tt.want) {
				t.Errorf("PreloadLibraries = %q, want %q", got, tt.want)
			}
		})
	}
	if got := PreloadLibraries(nil); got != nil {
		t.Errorf("PreloadLibraries(nil) = %q", got)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDownloadOK(t *testing.T) {
	g := newGateway(t)
	archive := fooArchive(t)
	g.set("foo", archive)
	d := newDownloader(t, g)
	var statuses []string
	d.OnRequest = func(status, ext string) { statuses = append(statuses, status+" "+ext) }

	size, err := d.Download(context.Background(), "foo.so", true, remoteSpec())
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(archive)) {
		t.Errorf("size = %d, want %d", size, len(archive))
	}
	if got := g.requests; !slices.Equal(got, []string{"GET /gw/latest/amd64/v15/extensions/foo.tar.zst"}) {
		t.Errorf("requests = %q", got)
	}
	// Labelled with the archive's name, as compute_ctl.
	if !slices.Equal(statuses, []string{"200 OK foo.tar.zst"}) {
		t.Errorf("OnRequest calls = %q", statuses)
	}
	ext := filepath.Join(d.ShareDir, "extension")
	if got := listDir(t, ext); !slices.Equal(got, []string{"foo--1.0.sql", "foo.control"}) {
		t.Errorf("share/extension = %v", got)
	}
	if got := readFile(t, filepath.Join(ext, "foo.control")); !strings.Contains(got, "default_version = '1.0'") {
		t.Errorf("foo.control = %q", got)
	}
	if got := readFile(t, filepath.Join(d.PkgLibDir, "foo.so")); got != "\x7fELF not really" {
		t.Errorf("foo.so = %q", got)
	}
	if l, err := os.Readlink(filepath.Join(d.PkgLibDir, "foo.so.1")); err != nil || l != "foo.so" {
		t.Errorf("foo.so.1 link = %q, %v", l, err)
	}
	if got := listDir(t, d.PkgLibDir); !slices.Equal(got, []string{"foo.so", "foo.so.1"}) {
		t.Errorf("lib = %v (temporary files left?)", got)
	}
	// Already unpacked: no second request, size 0.
	size, err = d.Download(context.Background(), "foo", false, remoteSpec())
	if err != nil || size != 0 || g.count() != 1 {
		t.Errorf("second Download = %d, %v, requests %d; want 0, nil, 1", size, err, g.count())
	}
}

func TestDownloadConcurrentFetchesOnce(t *testing.T) {
	g := newGateway(t)
	archive := fooArchive(t)
	g.set("foo", archive)
	d := newDownloader(t, g)
	const n = 8
	sizes := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { sizes[i], errs[i] = d.Download(context.Background(), "foo", false, remoteSpec()) })
	}
	wg.Wait()
	var total int64
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Download %d: %v", i, errs[i])
		}
		total += sizes[i]
	}
	if g.count() != 1 || total != int64(len(archive)) {
		t.Errorf("requests = %d, summed size = %d; want 1, %d", g.count(), total, len(archive))
	}
}

func TestDownloadErrors(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		isLib     bool
		spec      *spec.RemoteExtSpec
		noBase    bool
		status    int // gateway answer for foo
		want      error
		wantText  string
		wantCalls int
	}{
		{name: "not allowed", file: "baz", spec: remoteSpec(), want: ErrNotFound, wantText: "extension baz is not found"},
		{name: "unknown library", file: "nope.so", isLib: true, spec: remoteSpec(), want: ErrNotFound, wantText: "library nope is not found"},
		{name: "no remote storage", file: "foo", spec: remoteSpec(), noBase: true, want: ErrNoRemoteStorage},
		{name: "no remote spec", file: "foo", want: ErrNoRemoteSpec},
		{name: "gateway 500", file: "foo", spec: remoteSpec(), status: 500, wantText: "download extension foo: gateway answered 500 Internal Server Error", wantCalls: 1},
		{name: "gateway 404", file: "foo", spec: remoteSpec(), status: 404, wantText: "gateway answered 404 Not Found", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateway(t)
			g.set("foo", fooArchive(t))
			g.setFail("foo", tt.status)
			d := newDownloader(t, g)
			if tt.noBase {
				d.BaseURL = ""
			}
			_, err := d.Download(context.Background(), tt.file, tt.isLib, tt.spec)
			if err == nil {
				t.Fatal("want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			var de *DownloadError
			if tt.want == nil && !errors.As(err, &de) {
				t.Errorf("err = %T %v, want *DownloadError", err, err)
			}
			if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantText)
			}
			if g.count() != tt.wantCalls {
				t.Errorf("gateway requests = %d, want %d", g.count(), tt.wantCalls)
			}
		})
	}
}

func TestDownloadRetriesAfterFailure(t *testing.T) {
	g := newGateway(t)
	g.set("foo", fooArchive(t))
	g.setFail("foo", http.StatusServiceUnavailable)
	d := newDownloader(t, g)
	if _, err := d.Download(context.Background(), "foo", false, remoteSpec()); err == nil {
		t.Fatal("want the 503 to fail")
	}
	g.setFail("foo", 0)
	size, err := d.Download(context.Background(), "foo", false, remoteSpec())
	if err != nil || size == 0 || g.count() != 2 {
		t.Errorf("retry = %d, %v after %d requests; want a download", size, err, g.count())
	}
}

func TestDownloadRefusesBadArchives(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		body    []byte
		want    string
	}{
		{name: "dot-dot", entries: []entry{{name: "lib/../../evil.so", body: "x"}}, want: "refused entry name"},
		{name: "dot-dot at top", entries: []entry{{name: "../evil", body: "x"}}, want: "refused entry name"},
		{name: "absolute", entries: []entry{{name: "/etc/evil", body: "x"}}, want: "refused entry name"},
		{name: "symlink up", entries: []entry{{name: "lib/up", typ: tar.TypeSymlink, link: "../../x"}}, want: "refused symlink target"},
		{name: "symlink dot-dot", entries: []entry{{name: "lib/up", typ: tar.TypeSymlink, link: ".."}}, want: "refused symlink target"},
		{name: "symlink absolute", entries: []entry{{name: "share/extension/x.sql", typ: tar.TypeSymlink, link: "/etc/passwd"}}, want: "refused symlink target"},
		{name: "hard link", entries: []entry{{name: "lib/h", typ: tar.TypeLink, link: "lib/foo.so"}}, want: "unsupported entry type"},
		{name: "not zstd", body: []byte("plain text, not an archive"), want: "download extension foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateway(t)
			body := tt.body
			if body == nil {
				// A good file first: it must not be installed when a later entry is refused.
				body = buildArchive(t, append([]entry{{name: "lib/good.so", body: "good"}}, tt.entries...)...)
			}
			g.set("foo", body)
			d := newDownloader(t, g)
			_, err := d.Download(context.Background(), "foo", false, remoteSpec())
			var de *DownloadError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a *DownloadError containing %q", err, tt.want)
			}
			root := filepath.Dir(d.PkgLibDir)
			var found []string
			_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					found = append(found, strings.TrimPrefix(p, root))
				}
				return nil
			})
			if len(found) != 0 {
				t.Errorf("files left behind: %v", found)
			}
		})
	}
}

// A symbolic link already in pkglibdir that leads out of it (not one from the archive)
// is not written through: every write goes through an os.Root of the directory.
func TestDownloadDoesNotWriteThroughLinksOut(t *testing.T) {
	g := newGateway(t)
	g.set("foo", buildArchive(t, entry{name: "lib/out/evil.so", body: "x"}, entry{name: "lib/out2/", typ: tar.TypeDir}))
	d := newDownloader(t, g)
	outside := t.TempDir()
	if err := os.MkdirAll(d.PkgLibDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(d.PkgLibDir, "out")); err != nil {
		t.Fatal(err)
	}
	_, err := d.Download(context.Background(), "foo", false, remoteSpec())
	var de *DownloadError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *DownloadError", err)
	}
	t.Logf("error: %v", err)
	if got := listDir(t, outside); len(got) != 0 {
		t.Errorf("written outside pkglibdir: %v", got)
	}
}

func TestDownloadUnpackLimit(t *testing.T) {
	g := newGateway(t)
	g.set("foo", buildArchive(t, entry{name: "lib/a.so", body: strings.Repeat("a", 600)}, entry{name: "lib/b.so", body: strings.Repeat("b", 600)}))
	d := newDownloader(t, g)
	d.MaxUnpackedBytes = 1000
	if _, err := d.Download(context.Background(), "foo", false, remoteSpec()); err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") {
		t.Fatalf("err = %v, want the size limit", err)
	}
	if got := listDir(t, d.PkgLibDir); len(got) != 0 {
		t.Errorf("lib = %v, want empty", got)
	}
}

func TestArchiveURL(t *testing.T) {
	d := &Downloader{BaseURL: "http://gw:8080/prefix/", PGMajor: "v16", Arch: "arm64"}
	got, err := d.ArchiveURL("pg_cron")
	if err != nil || got != "http://gw:8080/prefix/latest/arm64/v16/extensions/pg_cron.tar.zst" {
		t.Errorf("ArchiveURL = %q, %v", got, err)
	}
	d.BuildTag = "release-1234"
	got, _ = d.ArchiveURL("x")
	if got != "http://gw:8080/prefix/release-1234/arm64/v16/extensions/x.tar.zst" {
		t.Errorf("ArchiveURL = %q", got)
	}
	for _, bad := range []string{"", "../x", "a/b"} {
		if _, err := d.ArchiveURL(bad); err == nil {
			t.Errorf("ArchiveURL(%q) accepted", bad)
		}
	}
}
