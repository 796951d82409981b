package vmmonitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/computetools/compute-tools/internal/atomicfile"
	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/vmmonitor"
	"github.com/computetools/compute-tools/internal/vmmonitor/filecache"
	"github.com/computetools/compute-tools/internal/vmmonitor/policy"
)

// FileCache is the LFC resizer as the adapter holds it (*filecache.PG): Close drops its
// connection while resizing is off.
type FileCache interface {
	policy.FileCache
	Close()
}

// AdapterOptions configure NewAdapter.
type AdapterOptions struct {
	// Policy holds what every connection's policy.Policy shares: the watcher, the
	// limit, the rules, the clock, and the State (what was applied last; NewAdapter
	// makes one when nil, so that a new connection does not start from a clean slate).
	// Its FileCache is ignored: the adapter gives each policy the one below, or none
	// when resizing is off.
	Policy policy.Options
	// FileCache is the LFC resizer; nil: never resized.
	FileCache FileCache
	// LFCResizingDisabled says, at each Reset, whether the spec turns LFC resizing off;
	// nil: never.
	LFCResizingDisabled func() (bool, error)
	// Log: nil is slog.Default().
	Log *slog.Logger
}

// Adapter is internal/vmmonitor/policy behind the protocol's vmmonitor.Policy: Reset
// makes a policy.Policy for the new connection (with or without the file cache, as the
// applied spec says) and starts it (policy.Policy.Start: the sizes for the machine's
// memory; a limit or file cache that cannot be set is a warning there, so the
// connection stays); Upscale and Downscale convert the allocation and go to that
// policy. Every connection's policy shares one policy.State: the guards of the memory
// limit hold across connections.
type Adapter struct {
	o   AdapterOptions
	log *slog.Logger

	mu  sync.Mutex
	cur *policy.Policy
	// lfcOff is the last answer of LFCResizingDisabled, to log a change once.
	lfcOff bool
}

// NewAdapter makes an Adapter; its options' rules are checked at the first Reset.
func NewAdapter(o AdapterOptions) *Adapter {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if o.Policy.Log == nil {
		o.Policy.Log = log
	}
	if o.Policy.State == nil {
		o.Policy.State = policy.NewState()
	}
	return &Adapter{o: o, log: log}
}

var _ vmmonitor.Policy = (*Adapter)(nil)

// Reset implements vmmonitor.Policy.
func (a *Adapter) Reset(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cur = nil
	o := a.o.Policy
	o.FileCache = nil
	if a.o.FileCache != nil {
		off := false
		if a.o.LFCResizingDisabled != nil {
			var err error
			if off, err = a.o.LFCResizingDisabled(); err != nil {
				a.log.Warn("cannot tell whether the spec disables LFC resizing; resizing it", "err", err)
				off = false
			}
		}
		if off != a.lfcOff {
			a.log.Info("LFC resizing", "disabled", off, "why", "disable_lfc_resizing in the applied spec")
			a.lfcOff = off
		}
		if off {
			a.o.FileCache.Close()
		} else {
			o.FileCache = a.o.FileCache
		}
	}
	p, err := policy.New(o)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	a.cur = p
	return nil
}

// current is the policy of the connection, after its Reset.
func (a *Adapter) current() (*policy.Policy, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur == nil {
		return nil, errors.New("the vm-monitor did not start for this connection")
	}
	return a.cur, nil
}

// Upscale implements vmmonitor.Policy.
func (a *Adapter) Upscale(ctx context.Context, granted vmmonitor.Allocation) error {
	p, err := a.current()
	if err != nil {
		return err
	}
	return p.Upscale(ctx, policy.Allocation{CPU: granted.CPU, Mem: granted.Mem})
}

// Downscale implements vmmonitor.Policy.
func (a *Adapter) Downscale(ctx context.Context, target vmmonitor.Allocation) (bool, string, error) {
	p, err := a.current()
	if err != nil {
		return false, "", err
	}
	return p.Downscale(ctx, policy.Allocation{CPU: target.CPU, Mem: target.Mem})
}

// UpscaleRequests implements vmmonitor.Policy: the watcher's, which outlives the
// connections.
func (a *Adapter) UpscaleRequests() <-chan struct{} {
	if a.o.Policy.Watcher == nil {
		return nil
	}
	return a.o.Policy.Watcher.UpscaleRequests()
}

// AppliedSpecDisablesLFC returns the LFCResizingDisabled of the applied config in
// stateDir: its spec's disable_lfc_resizing; false without an applied config (no compute
// configured yet).
func AppliedSpecDisablesLFC(stateDir string) func() (bool, error) {
	p := paths.AppliedConfigFile(stateDir)
	return func() (bool, error) {
		// postgres writes the state directory; the vm-monitor (its own user, root on
		// an image without polkit) must not follow a link planted there.
		raw, err := atomicfile.ReadFile(p, 64<<20)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		l, err := spec.Load(raw)
		if err != nil {
			return false, fmt.Errorf("applied config %s: %w", p, err)
		}
		return filecache.ResizingDisabled(l.ComputeSpec()), nil
	}
}
