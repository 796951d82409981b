package pgconf

import "testing"

// The warm-up cluster's postgresql.conf: compute_ctl's settings, no TCP listener, the
// socket in the given directory (quoted), and the neon library only when asked for.
func TestWarmup(t *testing.T) {
	golden(t, "warmup.conf", Warmup(WarmupOptions{SocketDir: "/var/db/postgres/compute.warmup"}))
	golden(t, "warmup_neon.conf", Warmup(WarmupOptions{SocketDir: "/var/db/it's here.warmup", PreloadNeon: true}))
}
