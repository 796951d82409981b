// Package extensions implements Neon's remote extensions (compute_tools/src/extension_server.rs): the control
// files of the extensions a spec allows are written into Postgres's share directory, and
// extension archives (zstd-compressed tarballs) are fetched from the extension storage
// gateway and unpacked into the share and library directories, either at startup for
// the libraries of shared_preload_libraries (Prepare) or on demand when Postgres asks the
// internal port (POST /extension_server/{filename}, Handler).
//
// The package works on spec.RemoteExtSpec only; it neither reads the state record nor
// starts Postgres. Directories and the Postgres major version come from pg_config
// (DiscoverPGConfig).
package extensions

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/computetools/compute-tools/internal/spec"
)

// Errors a caller maps to HTTP statuses (see Handler).
var (
	// ErrNotFound: the library or extension is unknown or not allowed by the spec (404).
	ErrNotFound = errors.New("extension not found")
	// ErrNoRemoteStorage: no gateway base URL is configured (412).
	ErrNoRemoteStorage = errors.New("remote storage is not configured")
	// ErrNoRemoteSpec: the spec has no remote_extensions (409).
	ErrNoRemoteSpec = errors.New("information about remote extensions is unavailable")
)

// NotFoundError is a resolution failure; its text is Neon's ("library X is not found").
// errors.Is(err, ErrNotFound) holds for it.
type NotFoundError struct{ msg string }

func (e *NotFoundError) Error() string { return e.msg }

// Is makes NotFoundError match ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

func notFound(format string, args ...any) error {
	return &NotFoundError{msg: fmt.Sprintf(format, args...)}
}

// Resolve maps a file name Postgres asked for to the extension whose archive provides it.
// For a library, a ".so…" suffix is dropped and the name looked up in library_index. The
// extension must be listed in public_extensions or custom_extensions and have an entry
// in extension_data. Failures are *NotFoundError with Neon's messages.
func Resolve(s *spec.RemoteExtSpec, name string, isLibrary bool) (string, error) {
	if s == nil {
		return "", ErrNoRemoteSpec
	}
	ext := name
	if isLibrary {
		lib := name
		if i := strings.Index(lib, ".so"); i >= 0 {
			lib = lib[:i]
		}
		e, ok := s.LibraryIndex[lib]
		if !ok {
			return "", notFound("library %s is not found", lib)
		}
		ext = e
	}
	if !slices.Contains(s.PublicExtensions, ext) && !slices.Contains(s.CustomExtensions, ext) {
		return "", notFound("extension %s is not found", ext)
	}
	if _, ok := s.ExtensionData[ext]; !ok {
		return "", notFound("real_ext_name %s is not found", ext)
	}
	if !safeName(ext) {
		return "", notFound("extension %s is not found", ext)
	}
	return ext, nil
}

// controlAllowed is the looser rule Neon applies to control files (a QUIRK kept on
// purpose): without a public list every extension is allowed, and so is one missing
// from the public list when there is no custom list.
func controlAllowed(s *spec.RemoteExtSpec, ext string) bool {
	if s.PublicExtensions == nil || slices.Contains(s.PublicExtensions, ext) {
		return true
	}
	return s.CustomExtensions == nil || slices.Contains(s.CustomExtensions, ext)
}

// safeName reports whether name can be used as one path element.
func safeName(name string) bool {
	return name != "" && name != "." && !strings.ContainsAny(name, "/\\\x00") && !strings.Contains(name, "..")
}

// WriteControlFiles writes the control files (extension_data[ext].control_data) of the
// extensions allowed by s into <sharedir>/extension, creating the directory if needed.
// Existing files are kept as they are. A file name with a slash or ".." is refused; the
// other files are still written and the refusals returned together.
func WriteControlFiles(sharedir string, s *spec.RemoteExtSpec) error {
	if s == nil {
		return nil
	}
	if sharedir == "" {
		return errors.New("write control files: no share directory")
	}
	dir := filepath.Join(sharedir, "extension")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write control files: %w", err)
	}
	exts := make([]string, 0, len(s.ExtensionData))
	for ext := range s.ExtensionData {
		exts = append(exts, ext)
	}
	sort.Strings(exts)
	var errs []error
	for _, ext := range exts {
		if !controlAllowed(s, ext) {
			continue
		}
		files := s.ExtensionData[ext].ControlData
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !safeName(n) {
				errs = append(errs, fmt.Errorf("control file %q of extension %q: refused file name", n, ext))
				continue
			}
			if err := writeNew(filepath.Join(dir, n), files[n]); err != nil {
				errs = append(errs, fmt.Errorf("control file of extension %q: %w", ext, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("write control files: %w", errors.Join(errs...))
	}
	return nil
}

// writeNew creates path with content unless something already exists there.
func writeNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// preloadLine matches a shared_preload_libraries assignment in postgresql.conf.
var preloadLine = regexp.MustCompile(`^\s*shared_preload_libraries\s*=\s*'([^']*)'`)

// PreloadLibraries lists the libraries to fetch at startup: those named in the
// shared_preload_libraries setting of cluster.settings and in the last
// shared_preload_libraries='...' line of cluster.postgresql_conf, without "neon", and
// only those present in library_index. Order is kept and duplicates dropped.
func PreloadLibraries(s *spec.ComputeSpec) []string {
	if s == nil || s.RemoteExtensions == nil {
		return nil
	}
	var names []string
	if v, ok := s.Cluster.Settings.Find("shared_preload_libraries"); ok {
		names = append(names, splitList(v)...)
	}
	if s.Cluster.PostgresqlConf != nil {
		var last string
		found := false
		for _, line := range strings.Split(*s.Cluster.PostgresqlConf, "\n") {
			if m := preloadLine.FindStringSubmatch(line); m != nil {
				last, found = m[1], true
			}
		}
		if found {
			names = append(names, splitList(last)...)
		}
	}
	var out []string
	for _, n := range names {
		if n == "neon" || slices.Contains(out, n) {
			continue
		}
		if _, ok := s.RemoteExtensions.LibraryIndex[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// splitList splits a comma-separated GUC list, trimming blanks and double quotes.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.Trim(strings.TrimSpace(p), `"`)
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}
