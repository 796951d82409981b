package extensions

import (
	"context"
	"net/http"
	"time"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/version"
)

// DownloadTimeout bounds one archive request of a Downloader made by NewDownloader.
const DownloadTimeout = 5 * time.Minute

// NewDownloader builds the remote-extension downloader for the Postgres of pgbin: its
// directories and major version come from the pg_config beside it, the build tag from
// version.BuildTag. baseURL is the normalised gateway URL
// (controlplane.NormalizeRemoteExtURL); empty means no remote storage, and downloads fail
// with ErrNoRemoteStorage. onRequest (may be nil) becomes Downloader.OnRequest.
// compute-init (at startup) and compute-api (/extension_server) both build theirs here.
func NewDownloader(ctx context.Context, pgbin, baseURL string, onRequest func(httpStatus, ext string)) (*Downloader, error) {
	pc, err := DiscoverPGConfig(ctx, paths.Sibling(pgbin, "pg_config"))
	if err != nil {
		return nil, err
	}
	return &Downloader{BaseURL: baseURL, BuildTag: version.BuildTag, PGMajor: pc.Major,
		PkgLibDir: pc.PkgLibDir, ShareDir: pc.ShareDir, Client: &http.Client{Timeout: DownloadTimeout},
		OnRequest: onRequest}, nil
}
