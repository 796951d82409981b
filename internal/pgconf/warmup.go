package pgconf

import (
	"strconv"
	"strings"
)

// The settings of compute_ctl's warm-up cluster (prewarm_postgres_vm_memory): 65536
// shared buffers (512 MB) and a port nobody connects to.
const (
	WarmupSharedBuffers = 65536
	WarmupPort          = 51055
)

// WarmupOptions are the host facts of the pooled VM's throwaway cluster.
type WarmupOptions struct {
	// SocketDir is where its one unix socket goes (the throwaway directory itself).
	SocketDir string
	// PreloadNeon loads the neon library, as compute_ctl does; the caller sets it only
	// where the library is installed (vanilla Postgres refuses to start otherwise).
	PreloadNeon bool
}

// Warmup renders the postgresql.conf of the throwaway cluster a pooled VM warms up with:
// compute_ctl's shared_buffers and port, but no TCP listener (listen_addresses empty)
// and the socket in a directory of its own, so that a taken port or another server's
// socket directory cannot stop it and nothing can connect to it.
func Warmup(o WarmupOptions) string {
	var b strings.Builder
	b.WriteString("# compute-tools: the throwaway cluster of a pooled VM's warm-up, removed once its Postgres has started\n")
	b.WriteString("shared_buffers=" + strconv.Itoa(WarmupSharedBuffers) + "\n")
	b.WriteString("port=" + strconv.Itoa(WarmupPort) + "\n")
	b.WriteString("listen_addresses=''\n")
	b.WriteString("unix_socket_directories=" + EscapeValue(o.SocketDir) + "\n")
	if o.PreloadNeon {
		b.WriteString("shared_preload_libraries='neon'\n")
	}
	return b.String()
}
