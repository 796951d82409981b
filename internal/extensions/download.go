package extensions

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/computetools/compute-tools/internal/safetar"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxUnpackedBytes bounds the unpacked size of one archive.
const DefaultMaxUnpackedBytes int64 = 4 << 30

// DownloadError is a failed fetch or unpack of an archive (500 on the API).
type DownloadError struct {
	Ext string
	Err error
}

func (e *DownloadError) Error() string {
	return fmt.Sprintf("download extension %s: %v", e.Ext, e.Err)
}

func (e *DownloadError) Unwrap() error { return e.Err }

// Downloader fetches extension archives from the gateway and unpacks them. Its zero
// value is not usable without BaseURL and the directories; it must not be copied after
// first use.
//
// The archive of extension X is GET <BaseURL><BuildTag>/<Arch>/<PGMajor>/extensions/X.tar.zst,
// a zstd-compressed tar whose lib/* entries go to PkgLibDir and share/extension/* to
// ShareDir/extension; other entries are ignored.
type Downloader struct {
	// BaseURL is the gateway URL, normalised (controlplane.NormalizeRemoteExtURL). Empty
	// means no remote storage: downloads fail with ErrNoRemoteStorage.
	BaseURL string
	// BuildTag is the build tag path element (version.BuildTag; "latest" if empty).
	BuildTag string
	// PGMajor is the Postgres major version path element, e.g. "v15" (see PGConfig).
	PGMajor string
	// Arch is the architecture path element (default runtime.GOARCH: amd64, arm64).
	Arch string
	// Client does the requests (default http.DefaultClient). It should have a timeout.
	Client *http.Client
	// PkgLibDir and ShareDir are pg_config --pkglibdir and --sharedir.
	PkgLibDir, ShareDir string
	// MaxUnpackedBytes bounds the unpacked size of one archive (default
	// DefaultMaxUnpackedBytes).
	MaxUnpackedBytes int64
	// OnRequest, if set, is called after each gateway request with the full status text
	// ("200 OK", or "unknown" when no response came) and the archive's file name
	// ("postgis.tar.zst", the last element of its path, as compute_ctl labels it), for the
	// compute_ctl_remote_ext_requests_total counter.
	OnRequest func(httpStatus, filename string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	mu      sync.Mutex
	flights map[string]*flight
}

// flight is one download of an archive; done closes when it ends.
type flight struct {
	done chan struct{}
	size int64
	err  error
}

// Download fetches and unpacks the archive providing name (a library file name when
// isLibrary, else an extension name), as allowed by s. It returns the compressed size of
// the archive. An archive already unpacked by this Downloader is not fetched again (size
// 0); a caller arriving during another caller's download waits for it and gets its
// result with size 0.
//
// Errors: ErrNoRemoteStorage without BaseURL, ErrNoRemoteSpec when s is nil, ErrNotFound
// (a *NotFoundError) for unknown or disallowed names, *DownloadError otherwise.
func (d *Downloader) Download(ctx context.Context, name string, isLibrary bool, s *spec.RemoteExtSpec) (int64, error) {
	if d == nil || d.BaseURL == "" {
		return 0, ErrNoRemoteStorage
	}
	if s == nil {
		return 0, ErrNoRemoteSpec
	}
	ext, err := Resolve(s, name, isLibrary)
	if err != nil {
		return 0, err
	}
	return d.fetchOnce(ctx, ext)
}

// fetchOnce de-duplicates downloads of one archive.
func (d *Downloader) fetchOnce(ctx context.Context, ext string) (int64, error) {
	d.mu.Lock()
	if d.flights == nil {
		d.flights = make(map[string]*flight)
	}
	if f, ok := d.flights[ext]; ok {
		select {
		case <-f.done:
			if f.err == nil {
				d.mu.Unlock()
				return 0, nil
			}
			// The last attempt failed: try again below.
		default:
			d.mu.Unlock()
			select {
			case <-f.done:
				return 0, f.err
			case <-ctx.Done():
				return 0, &DownloadError{Ext: ext, Err: ctx.Err()}
			}
		}
	}
	f := &flight{done: make(chan struct{})}
	d.flights[ext] = f
	d.mu.Unlock()

	f.size, f.err = d.fetch(ctx, ext)
	close(f.done)
	return f.size, f.err
}

// ArchiveURL is the gateway URL of an extension's archive.
func (d *Downloader) ArchiveURL(ext string) (string, error) {
	if !safeName(ext) {
		return "", fmt.Errorf("bad extension name %q", ext)
	}
	tag := d.BuildTag
	if tag == "" {
		tag = "latest"
	}
	arch := d.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	if d.PGMajor == "" {
		return "", errors.New("postgres major version unknown")
	}
	base, err := url.Parse(d.BaseURL)
	if err != nil {
		return "", fmt.Errorf("remote extensions base URL: %w", err)
	}
	return base.JoinPath(tag, arch, d.PGMajor, "extensions", archiveName(ext)).String(), nil
}

func (d *Downloader) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

// fetch downloads and unpacks one archive.
func (d *Downloader) fetch(ctx context.Context, ext string) (int64, error) {
	fail := func(err error) (int64, error) { return 0, &DownloadError{Ext: ext, Err: err} }
	u, err := d.ArchiveURL(ext)
	if err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(err)
	}
	client := d.Client
	if client == nil {
		client = http.DefaultClient
	}
	log := d.logger().With("extension", ext)
	log.Info("downloading extension archive")
	resp, err := client.Do(req) // net/http strips any password from the URL in its errors
	if err != nil {
		d.report("unknown", ext)
		return fail(err)
	}
	defer func() { _ = resp.Body.Close() }()
	d.report(resp.Status, ext)
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("gateway answered %s", resp.Status))
	}
	body := &countingReader{r: resp.Body}
	if err := d.unpack(body); err != nil {
		return fail(err)
	}
	// Count what follows the tar's end (padding, further zstd frames).
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fail(fmt.Errorf("read archive: %w", err))
	}
	log.Info("extension archive unpacked", "bytes", body.n)
	return body.n, nil
}

func (d *Downloader) report(status, ext string) {
	if d.OnRequest != nil {
		d.OnRequest(status, archiveName(ext))
	}
}

// archiveName is the file name of ext's archive, the last element of its gateway path.
func archiveName(ext string) string { return ext + ".tar.zst" }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// pending is an unpacked entry waiting to be put in place.
type pending struct {
	dir    *safetar.Dir
	tmp    string // regular file: temporary file beside rel
	link   string // symlink: its target
	rel    string // below dir
	name   string // the archive entry
	isLink bool
}

// unpack reads a zstd tar and installs its lib/ and share/extension/ entries. Regular
// files are first written to temporary files beside their destination and only renamed
// into place once the whole archive was read, so a broken archive leaves nothing half
// written (directories it created may remain). Every write goes through an os.Root of
// the destination directory (package safetar).
func (d *Downloader) unpack(r io.Reader) (err error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	defer zr.Close()
	limit := d.MaxUnpackedBytes
	if limit <= 0 {
		limit = DefaultMaxUnpackedBytes
	}
	dirs := map[string]*safetar.Dir{}
	var todo []pending
	defer func() {
		if err != nil {
			for _, p := range todo {
				if p.tmp != "" {
					_ = p.dir.Remove(p.tmp)
				}
			}
		}
		for _, dir := range dirs {
			_ = dir.Close()
		}
	}()
	// open opens a destination root the first time an entry needs it.
	open := func(root string) (*safetar.Dir, error) {
		if dir, ok := dirs[root]; ok {
			return dir, nil
		}
		dir, err := safetar.Open(root, 0o755)
		if err != nil {
			return nil, err
		}
		dirs[root] = dir
		return dir, nil
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		root, rel, err := d.destination(hdr.Name)
		if err != nil {
			return err
		}
		if root == "" || rel == "." {
			continue // outside lib/ and share/extension/, or one of those directories
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			dir, err := open(root)
			if err == nil {
				err = dir.MkdirAll(rel)
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			if hdr.Size > limit-total {
				return fmt.Errorf("unpack %s: archive larger than %d bytes unpacked", hdr.Name, limit)
			}
			total += hdr.Size
			dir, err := open(root)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", hdr.Name, err)
			}
			tmp, err := writeTemp(dir, rel, tr, hdr)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", hdr.Name, err)
			}
			todo = append(todo, pending{dir: dir, tmp: tmp, rel: rel, name: hdr.Name})
		case tar.TypeSymlink:
			// Only a link to a sibling (libfoo.so -> libfoo.so.1) is accepted: it cannot
			// lead out of the directory, whatever other links the archive holds.
			t := hdr.Linkname
			if t == "" || t == ".." || strings.ContainsAny(t, "/\\\x00") {
				return fmt.Errorf("unpack %s: refused symlink target %q", hdr.Name, t)
			}
			dir, err := open(root)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", hdr.Name, err)
			}
			todo = append(todo, pending{dir: dir, link: t, rel: rel, name: hdr.Name, isLink: true})
		default:
			return fmt.Errorf("unpack %s: unsupported entry type %q", hdr.Name, string(hdr.Typeflag))
		}
	}
	for i, p := range todo {
		dst := filepath.Join(p.dir.Path(), filepath.FromSlash(p.rel))
		if p.isLink {
			if err := p.dir.Symlink(p.name, p.rel, p.link); err != nil {
				return fmt.Errorf("install %s: %w", dst, err)
			}
			continue
		}
		if err := p.dir.Rename(p.tmp, p.rel); err != nil {
			return fmt.Errorf("install %s: %w", dst, err)
		}
		todo[i].tmp = ""
	}
	return nil
}

// destination maps an archive entry name to its root directory and path below it. An
// absolute name or one with a ".." element is refused; entries outside lib/ and
// share/extension/ give an empty root.
func (d *Downloader) destination(name string) (root, rel string, err error) {
	clean, err := safetar.CleanName(name)
	if err != nil || strings.ContainsRune(name, '\\') {
		return "", "", fmt.Errorf("unpack: refused entry name %q", name)
	}
	extDir := ""
	if d.ShareDir != "" {
		extDir = filepath.Join(d.ShareDir, "extension")
	}
	for _, m := range []struct{ prefix, root string }{
		{"lib", d.PkgLibDir},
		{"share/extension", extDir},
	} {
		if clean != m.prefix && !strings.HasPrefix(clean, m.prefix+"/") {
			continue
		}
		if m.root == "" {
			return "", "", errors.New("unpack: pkglibdir or sharedir not configured")
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(clean, m.prefix), "/")
		if rel == "" {
			rel = "."
		}
		return m.root, rel, nil
	}
	return "", "", nil
}

// writeTemp copies one file of the archive to a temporary file beside rel (its parents
// made as needed) and returns the temporary file's path below dir.
func writeTemp(dir *safetar.Dir, rel string, r io.Reader, hdr *tar.Header) (string, error) {
	if err := dir.MkdirAll(path.Dir(rel)); err != nil {
		return "", err
	}
	f, tmp, err := dir.CreateTemp(rel, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, io.LimitReader(r, hdr.Size))
	if err == nil {
		mode := os.FileMode(0o644)
		if hdr.Mode&0o111 != 0 {
			mode = 0o755
		}
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = dir.Remove(tmp)
		return "", err
	}
	return tmp, nil
}
