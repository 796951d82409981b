package compute

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/computetools/compute-tools/internal/extensions"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// prepareRemoteExtensions writes the spec's extension control files and downloads its
// preload libraries (a pre-start task of start_compute in compute_tools/src/compute.rs;
// compute_tools/src/extension_server.rs), recording the load_ext_* metrics. The
// Postgres directories belong to root in a Debian install: when they are not writable for
// this unit, the step is skipped with a warning rather than failing the start.
func prepareRemoteExtensions(ctx context.Context, cfg Settings, s *spec.ComputeSpec, d *Deps) error {
	if s.RemoteExtensions == nil {
		return nil
	}
	dl, err := extensions.NewDownloader(ctx, cfg.PGBin, cfg.RemoteExtBaseURL, d.Store.RemoteExtRequestHook())
	if err != nil {
		return fmt.Errorf("remote extensions: %w", err)
	}
	dl.Logger = d.Log
	if !writable(filepath.Join(dl.ShareDir, "extension")) {
		d.logger().Warn("remote extensions: the Postgres extension directory is not writable for this unit; control files and libraries are not installed",
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
