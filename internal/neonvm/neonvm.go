// Package neonvm runs the two NeonVM guest helpers that compute_ctl runs through sudo
// before Postgres starts: resize-swap (spec.swap_size_bytes, with --resize-swap-on-bind)
// and set-disk-quota (spec.disk_quota_bytes, with --set-disk-quota-for-fs).
//
// There is no sudo here. A caller that is root runs a helper itself; compute-init, which
// runs as postgres, starts a templated oneshot unit instead (compute-resize-swap@<bytes>
// and compute-disk-quota@<kib>, allowed to postgres by the polkit rule) that runs the
// helper as root and names only a number: the disk quota unit takes the mountpoint from
// the root-owned settings file, never from its caller. Failures are the reference's: a
// helper that fails, or a unit that cannot be started, fails the compute's start. Where
// the helper is not installed (not a NeonVM guest, or resize-swap --once already ran
// and deleted itself) the step is skipped with a log line: compute_ctl skips only when
// sudo itself is missing, and fails when sudo cannot find the helper.
package neonvm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"

	"github.com/computetools/compute-tools/internal/execx"
)

// UnitStarter starts a unit and waits for its start job to finish with "done"
// (*sysd.Manager).
type UnitStarter interface {
	StartUnit(ctx context.Context, name string) error
}

// Helpers runs the NeonVM helpers.
type Helpers struct {
	// ResizeSwapBin and SetDiskQuotaBin are the helpers' paths (the units name the same).
	ResizeSwapBin   string
	SetDiskQuotaBin string
	// Units starts the privileged units; nil runs the helpers directly (the caller is
	// root).
	Units UnitStarter
	// ResizeSwapUnit and DiskQuotaUnit name the unit instance for a size.
	ResizeSwapUnit func(bytes uint64) string
	DiskQuotaUnit  func(kib uint64) string
	// UnitMountpoint is the mountpoint the disk quota unit uses (its EnvironmentFile's
	// COMPUTE_SET_DISK_QUOTA_FOR_FS, which the caller's unit reads too).
	UnitMountpoint string
	Log            *slog.Logger
}

func (h Helpers) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// installed reports whether the helper at path exists; a stat error other than "does
// not exist" is an error.
func installed(path string) (bool, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// ResizeSwap runs `resize-swap --once <bytes>` (--once first: the helper deletes itself
// after success, so that a later start cannot swapoff under a running Postgres).
func (h Helpers) ResizeSwap(ctx context.Context, bytes uint64) error {
	ok, err := installed(h.ResizeSwapBin)
	if err != nil {
		return fmt.Errorf("resize swap: %w", err)
	}
	if !ok {
		h.log().Info("swap not resized: the NeonVM helper is not installed (not a NeonVM guest, or it already ran)",
			"helper", h.ResizeSwapBin, "swap_size_bytes", bytes)
		return nil
	}
	n := strconv.FormatUint(bytes, 10)
	if err := h.run(ctx, h.ResizeSwapBin, []string{"--once", n}, h.ResizeSwapUnit, bytes); err != nil {
		return fmt.Errorf("resize swap to %d bytes: %w", bytes, err)
	}
	h.log().Info("resized swap", "swap_size_bytes", bytes, "size_mib", bytes>>20)
	return nil
}

// SetDiskQuota runs `set-disk-quota <kib> <mountpoint>` (kib = bytes/1024; 0 lifts the
// quota).
func (h Helpers) SetDiskQuota(ctx context.Context, bytes uint64, mountpoint string) error {
	if mountpoint == "" {
		return errors.New("set disk quota: no mountpoint")
	}
	ok, err := installed(h.SetDiskQuotaBin)
	if err != nil {
		return fmt.Errorf("set disk quota: %w", err)
	}
	if !ok {
		h.log().Warn("disk quota not set: the NeonVM helper is not installed",
			"helper", h.SetDiskQuotaBin, "disk_quota_bytes", bytes, "mountpoint", mountpoint)
		return nil
	}
	if h.Units != nil && h.UnitMountpoint != mountpoint {
		return fmt.Errorf("set disk quota: --set-disk-quota-for-fs is %q, but the unit that sets it as root takes %q from the settings file", mountpoint, h.UnitMountpoint)
	}
	kib := bytes / 1024
	if err := h.run(ctx, h.SetDiskQuotaBin, []string{strconv.FormatUint(kib, 10), mountpoint}, h.DiskQuotaUnit, kib); err != nil {
		return fmt.Errorf("set disk quota of %s to %d KiB: %w", mountpoint, kib, err)
	}
	h.log().Info("set disk quota", "disk_quota_bytes", bytes, "size_mib", bytes>>20, "mountpoint", mountpoint)
	return nil
}

// run runs the helper directly, or starts the unit for size.
func (h Helpers) run(ctx context.Context, bin string, args []string, unit func(uint64) string, size uint64) error {
	if h.Units == nil {
		_, err := execx.Run(ctx, execx.Cmd{Path: bin, Args: args, Log: h.log()})
		return err
	}
	if unit == nil {
		return errors.New("no unit to run the helper as root")
	}
	name := unit(size)
	h.log().Debug("starting the helper's unit", "unit", name)
	if err := h.Units.StartUnit(ctx, name); err != nil {
		return fmt.Errorf("%w (journalctl -u %s)", err, name)
	}
	return nil
}
