package initcmd

import (
	"context"
	"time"
)

// unitManager is the part of the systemd connection a step uses (*sysd.Manager).
type unitManager interface {
	UnitTimestamps(ctx context.Context, name string) (execMainStart, activeEnter time.Time, err error)
	ActiveState(ctx context.Context, name string) (string, error)
	ReloadUnit(ctx context.Context, name string) error
	StopUnit(ctx context.Context, name string) error
	Close()
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

// Close waits for the connection and closes it.
func (u *lazyUnits) Close() {
	<-u.ready
	if u.m != nil {
		u.m.Close()
	}
}
