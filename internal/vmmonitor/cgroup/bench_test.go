package cgroup

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/vmmonitor/cgroup/cgrouptest"
)

// BenchmarkStep is one sample: memory.stat and memory.events read and parsed, the
// average and the pressure check (ten of these a second while the vm-monitor runs).
func BenchmarkStep(b *testing.B) {
	dir := b.TempDir()
	if err := cgrouptest.Write(dir); err != nil {
		b.Fatal(err)
	}
	w := NewWatcher(FixedDir(dir), Options{Clock: &fakeClock{now: t0}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.SetThreshold(1 << 40)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.step(ctx, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
}
