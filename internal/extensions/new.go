package extensions

import (
	"context"
	"errors"
	"fmt"
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
		PkgLibDir: pc.PkgLibDir, ShareDir: pc.ShareDir, Client: newClient(),
		OnRequest: onRequest}, nil
}

// newClient bounds each request by DownloadTimeout and follows a redirect only to the
// same scheme and host: an https gateway cannot be turned into plain HTTP or another
// server by a redirect.
func newClient() *http.Client {
	return &http.Client{
		Timeout: DownloadTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if first := via[0].URL; req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
				return fmt.Errorf("redirect from %s://%s to %s://%s refused", first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
			}
			return nil
		},
	}
}
