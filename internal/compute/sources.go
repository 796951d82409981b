package compute

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/computetools/compute-tools/internal/controlplane"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// acquired is the config a start runs with, read and validated once.
type acquired struct {
	*spec.Loaded
	// fromConfigure: it came with POST /configure (the start waited for it, or it was
	// there before compute-init started).
	fromConfigure bool
}

// configSource is one place a starting compute may take its config from. obtain returns
// nil and no error when the source has none; the next source is then asked.
type configSource interface {
	obtain(ctx context.Context, cur state.Record) (*acquired, error)
}

// configSources lists where a start looks for its config, in order: a config that POST
// /configure left before compute-init started; the control plane when one is given,
// else the config file; and last, waiting for POST /configure (warming the VM up
// meanwhile, with w).
func configSources(cfg Settings, d *Deps, wake <-chan struct{}, w *warmer) []configSource {
	pending := paths.PendingConfigFile(cfg.StateDir)
	log := d.logger()
	srcs := []configSource{pendingConfig{path: pending, log: log}}
	switch {
	case cfg.ControlPlaneURI != "":
		client := controlplane.NewClient(cfg.ControlPlaneTimeout)
		srcs = append(srcs, controlPlaneConfig{
			uri: cfg.ControlPlaneURI,
			log: log,
			fetch: func(ctx context.Context) (*spec.ComputeConfig, error) {
				return controlplane.FetchConfig(ctx, client, cfg.ControlPlaneURI, cfg.ComputeID, cfg.ControlPlaneToken,
					controlplane.WithOnRequest(d.Store.CplaneRequestHook(controlplane.RPCGetConfig)),
					controlplane.WithLogger(log))
			},
		})
	case cfg.ConfigFile != "":
		srcs = append(srcs, fileConfig{path: cfg.ConfigFile, log: log})
	}
	return append(srcs, waitForConfigure{
		store: d.Store, wake: wake, recheck: 10 * time.Second, status: d.status, path: pending, warm: w,
	})
}

// firstConfig asks the sources in order and returns the first config found.
func firstConfig(ctx context.Context, cur state.Record, srcs []configSource) (*acquired, error) {
	for _, s := range srcs {
		got, err := s.obtain(ctx, cur)
		if err != nil || got != nil {
			return got, err
		}
	}
	return nil, errors.New("no config: every source came up empty")
}

// loadPending reads the config POST /configure stored.
func loadPending(path string) (*acquired, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config from /configure: %w", err)
	}
	l, err := spec.Load(b)
	if err != nil {
		return nil, err
	}
	return &acquired{Loaded: l, fromConfigure: true}, nil
}

// pendingConfig is a POST /configure that arrived before compute-init started (the
// record is configuration_pending).
type pendingConfig struct {
	path string
	log  *slog.Logger
}

func (s pendingConfig) obtain(_ context.Context, cur state.Record) (*acquired, error) {
	if cur.Status != state.ConfigurationPending {
		return nil, nil
	}
	orDefault(s.log).Info("using the config sent with POST /configure")
	return loadPending(s.path)
}

// controlPlaneConfig asks the control plane. Its key set is not passed on: compute-api
// asks the control plane for it itself (a file in the state directory would be one the
// postgres user, which runs this, could replace).
type controlPlaneConfig struct {
	uri   string // for the logs
	log   *slog.Logger
	fetch func(ctx context.Context) (*spec.ComputeConfig, error)
}

func (s controlPlaneConfig) obtain(ctx context.Context, _ state.Record) (*acquired, error) {
	cc, err := s.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("get config from the control plane: %w", err)
	}
	if cc.Spec == nil {
		orDefault(s.log).Info("the control plane has no spec for this compute yet; waiting for POST /configure")
		return nil, nil
	}
	l, err := spec.Encode(cc)
	if err != nil {
		return nil, err
	}
	orDefault(s.log).Info("spec received from the control plane", "uri", controlplane.RedactURL(s.uri))
	return &acquired{Loaded: l}, nil
}

// fileConfig reads the config file; a missing file or one without a spec means wait
// for POST /configure.
type fileConfig struct {
	path string
	log  *slog.Logger
}

func (s fileConfig) obtain(_ context.Context, _ state.Record) (*acquired, error) {
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		orDefault(s.log).Info("no config file; waiting for POST /configure", "path", s.path)
		return nil, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, unreadableConfig(s.path, err)
	case err != nil:
		return nil, fmt.Errorf("read config file: %w", err)
	}
	cc, err := spec.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("invalid config file %s: %w", s.path, err)
	}
	if cc.Spec == nil {
		orDefault(s.log).Info("config file has no spec; waiting for POST /configure", "path", s.path)
		return nil, nil
	}
	l, err := spec.FromConfig(b, cc)
	if err != nil {
		return nil, err
	}
	orDefault(s.log).Info("spec read from the config file", "path", s.path)
	return &acquired{Loaded: l}, nil
}

// waitForConfigure waits, as long as it takes, for POST /configure to move the record
// out of empty, and takes the config it stored. Any other move ends the wait with an
// error (a /terminate, say). A pooled VM warms up meanwhile (warm, when enabled): the
// warm-up begins with the wait and is aborted the moment the wait ends, so that the
// config is taken as soon as it comes.
type waitForConfigure struct {
	store   *state.Store
	wake    <-chan struct{}
	recheck time.Duration
	status  func(string)
	path    string
	warm    *warmer
}

func (s waitForConfigure) obtain(ctx context.Context, _ state.Record) (*acquired, error) {
	s.status("empty: waiting for POST /configure")
	s.warm.start(ctx)
	r, err := s.store.Wait(ctx, s.wake, s.recheck, func(r state.Record) bool {
		return r.Status != state.Empty
	})
	s.warm.abort()
	if err != nil {
		return nil, err
	}
	if r.Status != state.ConfigurationPending {
		return nil, fmt.Errorf("stopped waiting for a spec: status is %s", r.Status)
	}
	return loadPending(s.path)
}
