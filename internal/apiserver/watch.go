package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/auth"
	"github.com/computetools/compute-tools/internal/control"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// lifecycleTimeout bounds the readiness handshake.
const lifecycleTimeout = 10 * time.Second

// lifecycleRecheck is how often the handshake re-checks between status signals.
const lifecycleRecheck = 20 * time.Millisecond

// lifecycleUnits is what the handshake asks systemd.
type lifecycleUnits interface {
	StartWaiting(ctx context.Context, name string) (bool, error)
	InvocationID(ctx context.Context, name string) (string, error)
}

// waitForLifecycle waits (at most timeout) until compute-init has marked the state record
// as its own, re-checking on every status signal and every 20 ms.
func waitForLifecycle(ctx context.Context, store *state.Store, w control.Waker, mgr lifecycleUnits, timeout time.Duration, log *slog.Logger) {
	wake, cancel := w.Subscribe()
	defer cancel()
	wctx, stop := context.WithTimeout(ctx, timeout)
	defer stop()
	_, err := store.Wait(wctx, wake, lifecycleRecheck, func(r state.Record) bool {
		// The unit keeps its last invocation ID until it starts again: only once its job
		// has left the queue is the ID the new run's.
		if waiting, err := mgr.StartWaiting(wctx, paths.UnitInit); err != nil || waiting {
			return false
		}
		inv, err := mgr.InvocationID(wctx, paths.UnitInit)
		return err == nil && inv != "" && r.InitInvocation == inv
	})
	if err != nil {
		log.Warn("compute-init has not begun the new lifecycle yet; serving anyway", "err", err)
		return
	}
	log.Info("compute is starting: new lifecycle begun")
}

// jwksRetry separates two rounds of fetchJWKS while the control plane cannot answer.
const jwksRetry = 5 * time.Second

// fetchJWKS gets the key set from the control plane (the compute_ctl_config.jwks of the
// answer compute-init gets its spec from) and installs it, retrying every retryEvery
// while the control plane cannot be asked; it returns once a key set was installed, or
// the answer has none or an unusable one (tokens are then refused, as compute_ctl does
// with an empty key set), or ctx ends. The keys never pass through a file: a key set in
// the state directory, which the postgres user can write, would let it plant its own
// keys and mint tokens for the API, which runs as root.
func fetchJWKS(ctx context.Context, fetch func(context.Context) (*spec.ComputeConfig, error), install func(json.RawMessage) error, retryEvery time.Duration, log *slog.Logger) {
	for {
		cc, err := fetch(ctx)
		if err == nil {
			switch {
			case cc.ComputeCtlConfig == nil || len(cc.ComputeCtlConfig.JWKS) == 0:
				log.Error("the control plane sent no compute_ctl_config.jwks: tokens stay refused")
			default:
				if err := install(cc.ComputeCtlConfig.JWKS); err != nil {
					log.Error("jwks from the control plane is unusable: tokens stay refused", "err", err)
				} else {
					log.Info("installed the jwks from the control plane")
				}
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("could not get the jwks from the control plane; trying again", "err", err, "retry_ms", retryEvery.Milliseconds())
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryEvery):
		}
	}
}

// loadVerifier takes the JWKS from the config file. Without the file (or keys) every
// token is refused with 401, as compute_ctl does with an empty key set.
func loadVerifier(path, computeID string, log *slog.Logger) (*auth.Verifier, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		log.Warn("no config file: no keys, every token is refused", "path", path)
		return auth.NewVerifier(nil, computeID, auth.WithLogger(log))
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	jwks, err := extractJWKS(b)
	if err != nil {
		// The API must still come up to report the failure compute-init records.
		log.Error("config file has no usable compute_ctl_config.jwks: every token is refused", "path", path, "err", err)
		return auth.NewVerifier(nil, computeID, auth.WithLogger(log))
	}
	return auth.NewVerifier(jwks, computeID, auth.WithLogger(log))
}

// extractJWKS pulls compute_ctl_config.jwks out of a config file without judging the
// spec, so that a config with a bad spec still lets the API authenticate.
func extractJWKS(b []byte) (json.RawMessage, error) {
	var c struct {
		ComputeCtlConfig *struct {
			JWKS json.RawMessage `json:"jwks"`
		} `json:"compute_ctl_config"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if c.ComputeCtlConfig == nil || len(c.ComputeCtlConfig.JWKS) == 0 {
		return nil, fmt.Errorf("missing compute_ctl_config.jwks")
	}
	return c.ComputeCtlConfig.JWKS, nil
}

// maxConfig bounds a config read from the state directory (which postgres writes: it is
// read without following a symbolic link, atomicfile.ReadFile).
const maxConfig = 64 << 20

// appliedConfigFile reads the running compute's spec for the extension server.
type appliedConfigFile string

func (p appliedConfigFile) CurrentSpec() (*spec.ComputeSpec, error) {
	b, err := atomicfile.ReadFile(string(p), maxConfig)
	if err != nil {
		return nil, err
	}
	cc, err := spec.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", string(p), err)
	}
	return cc.Spec, nil
}
