package initcmd

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/computetools/compute-tools/internal/neonvm"
	"github.com/computetools/compute-tools/internal/paths"
)

// unitManager is the part of the systemd connection a step uses (*sysd.Manager).
type unitManager interface {
	UnitTimestamps(ctx context.Context, name string) (execMainStart, activeEnter time.Time, err error)
	ActiveState(ctx context.Context, name string) (string, error)
	ReloadUnit(ctx context.Context, name string) error
	StopUnit(ctx context.Context, name string) error
	StartUnit(ctx context.Context, name string) error
	RestartUnit(ctx context.Context, name string) error
	Close()
}

// vmHelpers runs NeonVM's helpers: itself as root, otherwise through their units, with
// a systemd connection made only when a unit is started.
func vmHelpers(root bool, dial func(context.Context) (unitManager, error), log *slog.Logger) neonvm.Helpers {
	h := neonvm.Helpers{ResizeSwapBin: paths.ResizeSwapBin, SetDiskQuotaBin: paths.SetDiskQuotaBin,
		ResizeSwapUnit: paths.ResizeSwapUnit, DiskQuotaUnit: paths.DiskQuotaUnit,
		UnitMountpoint: os.Getenv(paths.EnvDiskQuotaFS), Log: log}
	if !root {
		h.Units = onDemandUnits{dial: dial}
	}
	return h
}

// onDemandUnits connects to systemd for each start.
type onDemandUnits struct {
	dial func(context.Context) (unitManager, error)
}

// do runs f on a systemd connection of its own.
func (u onDemandUnits) do(ctx context.Context, f func(unitManager) error) error {
	m, err := u.dial(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	return f(m)
}

func (u onDemandUnits) StartUnit(ctx context.Context, name string) error {
	return u.do(ctx, func(m unitManager) error { return m.StartUnit(ctx, name) })
}

// ActiveState, RestartUnit and StopUnit implement compute.LogUnits, each on a connection
// of its own (compute-init asks at most twice, and only when logs are shipped).
func (u onDemandUnits) ActiveState(ctx context.Context, name string) (state string, err error) {
	err = u.do(ctx, func(m unitManager) error {
		state, err = m.ActiveState(ctx, name)
		return err
	})
	return state, err
}

func (u onDemandUnits) RestartUnit(ctx context.Context, name string) error {
	return u.do(ctx, func(m unitManager) error { return m.RestartUnit(ctx, name) })
}

func (u onDemandUnits) StopUnit(ctx context.Context, name string) error {
	return u.do(ctx, func(m unitManager) error { return m.StopUnit(ctx, name) })
}

// lazyUnits connects to systemd in the background; calls wait for the connection.
type lazyUnits struct {
	ready chan struct{}
	m     unitManager
	err   error
}

func connectUnits(ctx context.Context, dial func(context.Context) (unitManager, error)) *lazyUnits {
	u := &lazyUnits{ready: make(chan struct{})}
	go func() {
		u.m, u.err = dial(ctx)
		close(u.ready)
	}()
	return u
}

// UnitTimestamps implements compute.UnitTimes once the connection is made.
func (u *lazyUnits) UnitTimestamps(ctx context.Context, name string) (time.Time, time.Time, error) {
	<-u.ready
	if u.err != nil {
		return time.Time{}, time.Time{}, u.err
	}
	return u.m.UnitTimestamps(ctx, name)
}

// ActiveState, ReloadUnit and StopUnit implement localproxy.Units once the connection
// is made.
func (u *lazyUnits) ActiveState(ctx context.Context, name string) (string, error) {
	<-u.ready
	if u.err != nil {
		return "", u.err
	}
	return u.m.ActiveState(ctx, name)
}

func (u *lazyUnits) ReloadUnit(ctx context.Context, name string) error {
	<-u.ready
	if u.err != nil {
		return u.err
	}
	return u.m.ReloadUnit(ctx, name)
}

func (u *lazyUnits) StopUnit(ctx context.Context, name string) error {
	<-u.ready
	if u.err != nil {
		return u.err
	}
	return u.m.StopUnit(ctx, name)
}

// RestartUnit implements compute.LogUnits once the connection is made.
func (u *lazyUnits) RestartUnit(ctx context.Context, name string) error {
	<-u.ready
	if u.err != nil {
		return u.err
	}
	return u.m.RestartUnit(ctx, name)
}

// Close waits for the connection and closes it.
func (u *lazyUnits) Close() {
	<-u.ready
	if u.m != nil {
		u.m.Close()
	}
}
