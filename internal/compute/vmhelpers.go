package compute

import (
	"context"
	"errors"
	"fmt"

	"github.com/computetools/compute-tools/internal/spec"
)

// startVMHelpers resizes swap and sets the disk quota, as the spec and the flags ask,
// alongside the preparation of PGDATA (compute_ctl runs them among its pre-start tasks,
// all of which must succeed). The returned function waits for them and returns the
// first error; it must be called once.
func startVMHelpers(ctx context.Context, cfg Settings, s *spec.ComputeSpec, d *Deps) func() error {
	var jobs []func(context.Context) error
	switch {
	case s.SwapSizeBytes == nil:
	case !cfg.ResizeSwapOnBind:
		d.logger().Info("swap_size_bytes left alone: --resize-swap-on-bind is off", "swap_size_bytes", *s.SwapSizeBytes)
	default:
		n := *s.SwapSizeBytes
		// Run to completion before Postgres starts, so that no swapoff can hit it.
		jobs = append(jobs, func(ctx context.Context) error { return d.VM.ResizeSwap(ctx, n) })
	}
	switch {
	case s.DiskQuotaBytes == nil:
	case cfg.DiskQuotaFS == "":
		d.logger().Info("disk_quota_bytes left alone: --set-disk-quota-for-fs is not set", "disk_quota_bytes", *s.DiskQuotaBytes)
	default:
		n := *s.DiskQuotaBytes
		jobs = append(jobs, func(ctx context.Context) error { return d.VM.SetDiskQuota(ctx, n, cfg.DiskQuotaFS) })
	}
	if len(jobs) == 0 {
		return func() error { return nil }
	}
	if d.VM == nil {
		return func() error { return errors.New("swap or disk quota: no way to run NeonVM's helpers") }
	}
	errs := make(chan error, len(jobs))
	for _, j := range jobs {
		go func() { errs <- j(ctx) }()
	}
	return func() error {
		var all []error
		for range jobs {
			if err := <-errs; err != nil {
				all = append(all, err)
			}
		}
		if len(all) > 0 {
			return fmt.Errorf("prepare: %w", errors.Join(all...))
		}
		return nil
	}
}
