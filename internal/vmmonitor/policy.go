package vmmonitor

import "context"

// Policy is what the protocol asks of the memory side (the cgroup watcher, the
// threshold and LFC sizing, MemoryHigh through systemd). The Server calls it; it never
// calls two methods at once, across connections too, so an implementation needs no
// lock of its own for them.
//
// Every ctx ends when the connection it serves ends (the agent went away, a newer
// connection replaced it, the server stops) or after Config.CallTimeout. An
// implementation must return soon after and leave a state that the next Reset
// re-establishes: a downscale cut short by ctx is never answered, and the agent takes a
// request it got no answer for as failed.
type Policy interface {
	// Reset is called once for each agent connection, after its handshake succeeded
	// and before any other call made for it: the reference builds its Runner per
	// connection, which sets the file cache size and the memory threshold from the
	// VM's memory as it is then (libs/vm_monitor/src/runner.rs, Runner::new). It runs
	// within the handshake bound (Config.HandshakeTimeout from the accept, 4 s as the
	// reference's); an error closes the connection (status 1011) and the agent redials.
	Reset(ctx context.Context) error

	// Upscale applies an UpscaleNotification: the agent has granted (already
	// given the VM) this allocation. Act on granted, not on what the guest shows yet:
	// hot-plugged memory can appear after the notification. nil is answered with
	// UpscaleConfirmation, an error with InternalError.
	Upscale(ctx context.Context, granted Allocation) error

	// Downscale decides a DownscaleRequest and, when it agrees, applies it (the file
	// cache first, then the threshold) before returning. ok=false is a denial with its
	// reason in status: an answer, DownscaleResult{Ok:false}, not an error. An error
	// is answered with InternalError.
	Downscale(ctx context.Context, target Allocation) (ok bool, status string, err error)

	// UpscaleRequests is read once, by New. Each value received while an agent is
	// connected becomes an UpscaleRequest, at most one per Config.UpscaleRequestInterval
	// (1 s) per connection; the others are dropped. Send (without blocking) every time a
	// memory sample is over the threshold, as the reference checks each sample: the
	// signal is a level, not an edge. A nil channel sends nothing.
	UpscaleRequests() <-chan struct{}
}
