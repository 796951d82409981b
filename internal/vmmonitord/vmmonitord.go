// Package vmmonitord runs the vm-monitor (`compute-monitor vm-monitor`, unit
// compute-vm-monitor.service): the peer of the VM autoscaler's agent on an autoscaled VM.
// It binds its listeners (TCP and/or vsock), tells systemd it is ready (READY=1), and
// serves the agent protocol (internal/vmmonitor) until it is stopped, with the memory side
// of internal/vmmonitor/{cgroup,filecache,policy} behind the protocol's Policy.
//
// Run is the testable part: the listeners, the Policy and the background tasks are given
// to it. Main is the production wiring: the listeners from Settings, systemd's manager
// API (internal/sysd: the cgroup of the watched unit, its MemoryHigh=), the cgroup
// watcher of that unit, the LFC resizer on the admin connection (application_name
// vm-monitor), and internal/vmmonitor/policy adapted to vmmonitor.Policy (adapter.go).
//
// Lifecycle, as the reference's, per agent connection: every connection's Reset reads the
// applied config's disable_lfc_resizing (compute_ctl passes the vm-monitor no file cache
// connection string when it is set) and sizes the file cache, MemoryHigh= and the
// threshold for the memory the machine has (policy.Policy.Start); then the agent's upscale
// and downscale messages go to that policy.
//
// Where this differs from the reference, on purpose:
//   - It is its own unit, started by compute.target when AUTOSCALING=true (a systemd
//     generator reads it; the reference's compute_ctl starts the vm-monitor task when the
//     AUTOSCALING variable is set), and it runs whether Postgres runs or not: the cgroup
//     watcher looks the unit's cgroup up again until it is there, and a connection whose
//     Reset cannot reach Postgres (to size the file cache) stays, with a warning (the
//     decisions that need Postgres answer the error); the reference starts the
//     vm-monitor only once Postgres runs and stops it with Postgres.
//   - disable_lfc_resizing is read from the applied config at each new agent connection,
//     so a reconfiguration that changes it takes effect at the next connection; the
//     reference reads it once, when it starts the vm-monitor. Without an applied config
//     (or with one that does not load, a warning) the file cache is resized.
//   - It listens on vsock as well as on TCP (each optional); a vsock listener that
//     cannot be opened (no vsock in the kernel) is a warning, not an error.
//   - It refuses to run (ErrConfig, exit 78) unless AUTOSCALING says true
//     (AutoscalingOn, the generator's rule), so that a unit left running, or restarted
//     with compute.target (it is PartOf= it), after the line was removed does not go on;
//     the unit's ExecCondition= skips the start before it gets here.
//   - A lost connection to systemd ends it with an error (sysd.ErrDisconnected, seen
//     in the calls that fail: the cgroup lookup, MemoryHigh=); the unit restarts it
//     with a new connection. internal/sysd does not reconnect.
//   - Every connection's policy shares one policy.State, so the guards of the memory
//     limit hold across connections and a reconnecting agent costs no repeated systemd
//     or Postgres writes (see internal/vmmonitor/policy); a limit or file cache that
//     cannot be set when a connection starts is a warning, and the connection stays.
//
// When it stops, for whatever reason, the unit's ExecStopPost= sets MemoryHigh= of the
// watched unit back to infinity (`systemctl set-property --runtime`): the agent goes on
// scaling the VM without a vm-monitor, and a limit sized for an old allocation would cap
// Postgres.
package vmmonitord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor"
)

// ErrConfig marks the errors of a configuration that cannot work (the command exits with
// EX_CONFIG, 78, and the unit does not restart it for those).
var ErrConfig = errors.New("configuration error")

// Notifier is what the vm-monitor tells systemd (sd_notify); internal/sysd in production.
type Notifier interface {
	Ready(status string) error
	Stopping() error
}

// Deps are what Run serves with.
type Deps struct {
	// Listeners are bound already; Run serves the agent on each and closes them. At
	// least one is required.
	Listeners []net.Listener
	// Policy decides and applies the agent's requests (required).
	Policy vmmonitor.Policy
	// Background runs beside the server (the cgroup watcher) until the server stops.
	Background []func(ctx context.Context)
	// Fatal ends Run with the error it delivers (Main: the connection to systemd is
	// lost, so the command exits non-zero and Restart= brings a new one); nil: never.
	Fatal <-chan error
	// Notifier: nil tells nothing.
	Notifier Notifier
	// Log: nil is slog.Default().
	Log *slog.Logger
	// Server tunes the protocol server (timeouts, clock); Policy, Logger and OnConnect
	// are set by Run.
	Server vmmonitor.Config
	// Trim gives back the resident pages start-up alone used (memtrim in production):
	// Run calls it TrimAfter after it serves and TrimAfter after each agent connection
	// (the handshake's and the first calls' code paths run once); nil: never.
	Trim func()
	// TrimAfter: 0 is DefaultTrimAfter, negative never.
	TrimAfter time.Duration
}

// DefaultTrimAfter is past the start and an agent connection's first health checks.
const DefaultTrimAfter = 30 * time.Second

// Run serves the agent on every listener until ctx ends (then it returns nil, having
// closed the listeners and the connection), a listener fails or Fatal delivers (then it
// stops the rest and returns the error). It tells the Notifier it is ready once it
// serves. The listeners are closed whatever it returns.
func Run(ctx context.Context, d Deps) error {
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	if d.Policy == nil {
		for _, ln := range d.Listeners {
			ln.Close()
		}
		return errors.New("vmmonitord: a policy is required")
	}
	if len(d.Listeners) == 0 {
		return fmt.Errorf("%w: no listener: give a TCP address (--addr) or a vsock port (--vsock-port) that can be opened", ErrConfig)
	}
	cfg := d.Server
	cfg.Policy, cfg.Logger = d.Policy, log
	trim := newSettleTrim(d.Trim, d.TrimAfter)
	defer trim.stop()
	cfg.OnConnect = trim.schedule
	srv := vmmonitor.New(cfg)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for _, f := range d.Background {
		wg.Go(func() { f(sctx) })
	}
	errc := make(chan error, len(d.Listeners))
	addrs := make([]string, 0, len(d.Listeners))
	for _, ln := range d.Listeners {
		addrs = append(addrs, ln.Addr().Network()+" "+ln.Addr().String())
		wg.Go(func() {
			if err := srv.Serve(sctx, ln); err != nil {
				errc <- err
			}
		})
	}
	trim.schedule()
	where := strings.Join(addrs, ", ")
	log.Info("vm-monitor listening", "listeners", where, "path", vmmonitor.Path)
	if d.Notifier != nil {
		if err := d.Notifier.Ready("serving the autoscaler agent on " + where); err != nil {
			log.Warn("sd_notify", "err", err)
		}
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("a listener failed; stopping", "err", err)
	case err = <-d.Fatal:
		log.Error("stopping", "err", err)
	}
	if d.Notifier != nil {
		_ = d.Notifier.Stopping()
	}
	stop()
	wg.Wait()
	if err == nil {
		log.Info("vm-monitor stopped")
	}
	return err
}

// settleTrim runs trim once, after a quiet period since the last schedule call.
type settleTrim struct {
	mu    sync.Mutex
	trim  func()
	after time.Duration
	t     *time.Timer
	done  bool
}

func newSettleTrim(trim func(), after time.Duration) *settleTrim {
	if after == 0 {
		after = DefaultTrimAfter
	}
	return &settleTrim{trim: trim, after: after}
}

// schedule (re)starts the wait: the trim runs after an agent connection's first calls.
func (s *settleTrim) schedule() {
	if s.trim == nil || s.after < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	if s.t != nil {
		s.t.Stop()
	}
	s.t = time.AfterFunc(s.after, s.trim)
}

// stop cancels a pending trim; later schedule calls do nothing.
func (s *settleTrim) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.t != nil {
		s.t.Stop()
	}
}
