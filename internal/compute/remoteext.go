package compute

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/version"
)

// NewDownloader builds the remote-extension downloader for the Postgres of pgbin
// (directories from its pg_config). baseURL may be empty: then nothing is downloaded.
func NewDownloader(ctx context.Context, pgbin, baseURL string) (*extensions.Downloader, error) {
	pc, err := extensions.DiscoverPGConfig(ctx, paths.Sibling(pgbin, "pg_config"))
	if err != nil {
		return nil, err
	}
	return &extensions.Downloader{BaseURL: baseURL, BuildTag: version.BuildTag, PGMajor: pc.Major,
		PkgLibDir: pc.PkgLibDir, ShareDir: pc.ShareDir, Client: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// prepareRemoteExtensions writes the spec's extension control files and downloads its
// preload libraries (inventory §5 step 6, §10.2), recording the load_ext_* metrics. The
// Postgres directories belong to root in a Debian install: when they are not writable for
// this unit, the step is skipped with a warning rather than failing the start.
func prepareRemoteExtensions(ctx context.Context, cfg Settings, s *spec.ComputeSpec, d *Deps) error {
	if s.RemoteExtensions == nil {
		return nil
	}
	dl, err := NewDownloader(ctx, cfg.PGBin, cfg.RemoteExtBaseURL)
	if err != nil {
		return fmt.Errorf("remote extensions: %w", err)
	}
	dl.OnRequest = d.Store.RemoteExtRequestHook()
	if !writable(filepath.Join(dl.ShareDir, "extension")) {
		slog.Warn("remote extensions: the Postgres extension directory is not writable for this unit; control files and libraries are not installed",
			"dir", filepath.Join(dl.ShareDir, "extension"))
		return nil
	}
	st, err := extensions.Prepare(ctx, dl, s)
	if err != nil {
		return fmt.Errorf("remote extensions: %w", err)
	}
	_, err = d.Store.Update(func(r *state.Record) error {
		st.Apply(&r.Metrics)
		return nil
	})
	return err
}

func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".compute-write-test-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
