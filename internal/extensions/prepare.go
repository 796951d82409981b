package extensions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// Stats are the remote-extension fields of /metrics.json.
type Stats struct {
	LoadExtMs            uint64 `json:"load_ext_ms"`
	NumExtDownloaded     uint64 `json:"num_ext_downloaded"`
	LargestExtSize       uint64 `json:"largest_ext_size"`
	TotalExtDownloadSize uint64 `json:"total_ext_download_size"`
}

// Apply copies the stats into the state record's metrics.
func (s Stats) Apply(m *state.Metrics) {
	m.LoadExtMs = s.LoadExtMs
	m.NumExtDownloaded = s.NumExtDownloaded
	m.LargestExtSize = s.LargestExtSize
	m.TotalExtDownloadSize = s.TotalExtDownloadSize
}

// Prepare is compute-init's startup step for a spec with remote_extensions (nothing to do
// without): it writes the allowed control files into d.ShareDir, then, when d has a base
// URL, downloads the archives of PreloadLibraries concurrently. A preload library the
// spec does not allow fails the step; a failed download is only logged, as compute_ctl
// does. NumExtDownloaded counts the archives actually fetched; LoadExtMs times the
// downloads.
func Prepare(ctx context.Context, d *Downloader, s *spec.ComputeSpec) (Stats, error) {
	var st Stats
	if s == nil || s.RemoteExtensions == nil {
		return st, nil
	}
	if d == nil {
		return st, errors.New("remote extensions: no downloader")
	}
	rs := s.RemoteExtensions
	if err := WriteControlFiles(d.ShareDir, rs); err != nil {
		return st, err
	}
	if d.BaseURL == "" {
		return st, nil
	}
	libs := PreloadLibraries(s)
	exts := make([]string, 0, len(libs))
	for _, lib := range libs {
		ext, err := Resolve(rs, lib, true)
		if err != nil {
			return st, fmt.Errorf("preload library %s: %w", lib, err)
		}
		exts = append(exts, ext)
	}
	start := time.Now()
	sizes := make([]int64, len(exts))
	errs := make([]error, len(exts))
	var wg sync.WaitGroup
	for i, ext := range exts {
		wg.Go(func() { sizes[i], errs[i] = d.fetchOnce(ctx, ext) })
	}
	wg.Wait()
	for i, ext := range exts {
		if errs[i] != nil {
			d.logger().Error("preload library download failed", "library", libs[i], "extension", ext, "err", errs[i])
			continue
		}
		if sizes[i] == 0 {
			continue // already fetched for another library
		}
		size := uint64(sizes[i])
		st.NumExtDownloaded++
		st.TotalExtDownloadSize += size
		st.LargestExtSize = max(st.LargestExtSize, size)
	}
	st.LoadExtMs = uint64(time.Since(start).Milliseconds())
	return st, nil
}

// PGConfig is what the package needs from pg_config.
type PGConfig struct {
	ShareDir  string // --sharedir
	PkgLibDir string // --pkglibdir
	// Major is the major version as the gateway paths spell it, e.g. "v15".
	Major string
}

// DiscoverPGConfig runs `<pgConfig> --sharedir --pkglibdir --version` (pg_config sits
// beside the postgres binary: paths.Sibling(pgbin, "pg_config")).
func DiscoverPGConfig(ctx context.Context, pgConfig string) (PGConfig, error) {
	res, err := execx.Run(ctx, execx.Cmd{Path: pgConfig, Args: []string{"--sharedir", "--pkglibdir", "--version"}})
	if err != nil {
		return PGConfig{}, fmt.Errorf("pg_config: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if len(lines) != 3 {
		return PGConfig{}, fmt.Errorf("pg_config: unexpected output %q", res.Stdout)
	}
	major, err := PGMajor(lines[2])
	if err != nil {
		return PGConfig{}, err
	}
	return PGConfig{ShareDir: strings.TrimSpace(lines[0]), PkgLibDir: strings.TrimSpace(lines[1]), Major: major}, nil
}

var versionRE = regexp.MustCompile(`^PostgreSQL (\d+)`)

// PGMajor turns `pg_config --version` output ("PostgreSQL 15.8 (Debian …)") into the
// gateway's path element ("v15"). compute_ctl only knows 14 to 17; any major from 10 up
// is accepted here.
func PGMajor(version string) (string, error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(version))
	if m == nil {
		return "", fmt.Errorf("pg_config: unexpected version %q", version)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 10 {
		return "", fmt.Errorf("pg_config: unsupported version %q", version)
	}
	return "v" + m[1], nil
}
