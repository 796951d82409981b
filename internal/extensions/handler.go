package extensions

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/httpjson"
	"github.com/computetools/compute-tools/internal/spec"
)

// SpecSource gives the compute's current spec. It returns (nil, nil) or an error
// matching fs.ErrNotExist when there is no spec yet.
type SpecSource interface {
	CurrentSpec() (*spec.ComputeSpec, error)
}

// FilenameParam is the path wildcard that names the requested file; the route that
// mounts the handler must declare it (as "{filename...}", which may hold slashes).
const FilenameParam = "filename"

// NewHandler serves POST /extension_server/{filename...}[?is_library=true|false] on the
// internal port, where internal/api's route table mounts it (the {filename...} wildcard
// must be in the route's pattern): the call the neon extension makes when Postgres lacks
// a file: 200 with an empty body once the archive is unpacked; 412 without remote
// storage; 409 when the spec has no remote_extensions (or there is no spec yet, where
// compute_ctl panics); 404 for an unknown or disallowed file; 500 when the download
// fails; 400 for a bad is_library. Errors are {"error": "..."}.
func NewHandler(src SpecSource, d *Downloader) http.Handler {
	return &handler{src: src, d: d}
}

type handler struct {
	src SpecSource
	d   *Downloader
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	filename := r.PathValue(FilenameParam)
	isLibrary := false
	// A query string that does not decode is refused, not read in part (URL.Query drops
	// the pairs it cannot decode, which would turn is_library=%zz into false).
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "failed to deserialize query string: malformed query")
		return
	}
	switch v := q["is_library"]; {
	case len(v) == 0:
	case len(v) == 1 && v[0] == "true":
		isLibrary = true
	case len(v) == 1 && v[0] == "false":
	default:
		httpjson.Error(w, http.StatusBadRequest, "failed to deserialize query string: is_library: provided string was not `true` or `false`")
		return
	}
	if h.d == nil || h.d.BaseURL == "" {
		httpjson.Error(w, http.StatusPreconditionFailed, ErrNoRemoteStorage.Error())
		return
	}
	var rs *spec.RemoteExtSpec
	var s *spec.ComputeSpec
	err = fs.ErrNotExist
	if h.src != nil {
		s, err = h.src.CurrentSpec()
	}
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		h.d.logger().Error("extension server: read spec", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, "read spec: "+err.Error())
		return
	case err == nil && s != nil:
		rs = s.RemoteExtensions
	}
	log := h.d.logger().With("filename", filename, "is_library", isLibrary)
	// The download goes on if the client leaves: other requests may be waiting for it.
	ctx := context.WithoutCancel(r.Context())
	_, err = h.d.Download(ctx, filename, isLibrary, rs)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusOK)
	case errors.Is(err, ErrNoRemoteStorage):
		httpjson.Error(w, http.StatusPreconditionFailed, err.Error())
	case errors.Is(err, ErrNoRemoteSpec):
		httpjson.Error(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrNotFound):
		log.Warn("extension server: not found", "err", err)
		httpjson.Error(w, http.StatusNotFound, err.Error())
	default:
		log.Error("extension server: download failed", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, err.Error())
	}
}
