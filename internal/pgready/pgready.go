// Package pgready tells when a local PostgreSQL is up, the way pg_ctl -w and compute_ctl
// do: it reads the status line the postmaster keeps in PGDATA/postmaster.pid and wakes on
// inotify events of the data directory instead of connecting or polling in a tight loop.
//
// compute-configure uses it to start beside compute-postgres and be ready to apply the
// spec the moment Postgres accepts connections (see docs/architecture.md).
package pgready

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrPartial marks a postmaster.pid caught while the postmaster was writing it.
var ErrPartial = errors.New("postmaster.pid is incomplete")

// PidFileName is the postmaster's lock file in PGDATA.
const PidFileName = "postmaster.pid"

// StatusReady is the status line of a postmaster that accepts connections (PG >= 10).
const StatusReady = "ready"

// PidFile is what postmaster.pid says (the lines of PG 10 and later).
type PidFile struct {
	PID       int
	DataDir   string
	StartTime time.Time // second resolution
	Port      int
	SocketDir string
	// Status is the trimmed status line: "starting", "stopping", "ready", "standby", or
	// empty while the postmaster has not written it yet.
	Status string
}

// ReadPidFile reads and parses PGDATA/postmaster.pid. A missing file gives an error that
// matches fs.ErrNotExist.
func ReadPidFile(pgdata string) (PidFile, error) {
	b, err := os.ReadFile(filepath.Join(pgdata, PidFileName))
	if err != nil {
		return PidFile{}, err
	}
	return ParsePidFile(string(b))
}

// ParsePidFile parses the contents of a postmaster.pid. The file is written line by line
// while the postmaster starts, so a short file is not an error: the missing fields stay
// zero. A file that cannot be parsed gives an error matching ErrPartial (a later look
// may find it complete).
func ParsePidFile(s string) (PidFile, error) {
	lines := strings.Split(s, "\n")
	var p PidFile
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return p, ErrPartial
	}
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid == 0 {
		return p, fmt.Errorf("%w: bad pid line %q", ErrPartial, lines[0])
	}
	// A negative PID is a single-user backend: never ready for connections.
	p.PID = pid
	field := func(i int) string {
		if i < len(lines) {
			return strings.TrimSpace(lines[i])
		}
		return ""
	}
	p.DataDir = field(1)
	if v := field(2); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return p, fmt.Errorf("%w: bad start time %q", ErrPartial, v)
		}
		p.StartTime = time.Unix(sec, 0)
	}
	if v := field(3); v != "" {
		if p.Port, err = strconv.Atoi(v); err != nil {
			return p, fmt.Errorf("%w: bad port %q", ErrPartial, v)
		}
	}
	p.SocketDir = field(4)
	p.Status = field(7)
	return p, nil
}

// Ready reports whether the postmaster accepts connections and was started at or after
// since (compared at the file's second resolution), so that a postmaster.pid left behind
// by a crash of an earlier run is not taken for the new server.
func (p PidFile) Ready(since time.Time) bool {
	return p.PID > 0 && p.Status == StatusReady && !p.StartTime.Before(since.Truncate(time.Second))
}

// Options tune Wait.
type Options struct {
	// Since: only a postmaster started at or after this counts (zero: any).
	Since time.Time
	// Wake, when set, delivers hints to run Check early (for example a status change).
	Wake <-chan struct{}
	// Check runs at every wake-up; an error ends the wait with it (for example: the
	// compute failed while Postgres was starting).
	Check func() error
	// Poll bounds the time between two looks at the file in case an inotify event is
	// missed (default 200 ms).
	Poll time.Duration
}

// Wait returns the pid file once the postmaster in pgdata is ready (see PidFile.Ready) and
// its process exists.
// It watches pgdata with inotify; if that is not possible it falls back to polling.
func Wait(ctx context.Context, pgdata string, o Options) (PidFile, error) {
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	events, stop := watch(pgdata)
	defer stop()
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		if o.Check != nil {
			if err := o.Check(); err != nil {
				return PidFile{}, err
			}
		}
		p, err := ReadPidFile(pgdata)
		switch {
		case err == nil && p.Ready(o.Since) && alive(p.PID):
			return p, nil
		case err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrPartial):
			return PidFile{}, fmt.Errorf("wait for postgres: %w", err)
		}
		select {
		case <-ctx.Done():
			return PidFile{}, fmt.Errorf("wait for postgres: %w", ctx.Err())
		case <-events:
		case <-o.Wake:
		case <-tick.C:
		}
	}
}

// alive reports whether a process pid exists (a pid file left by a crash in the same
// second as Since would otherwise pass). EPERM means it exists but is not ours.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// watch delivers a hint on every change in dir (best effort: nil channel and a no-op stop
// when inotify is unavailable, for example in a sandbox that forbids it).
func watch(dir string) (<-chan struct{}, func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, func() {}
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_MODIFY|unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE); err != nil {
		unix.Close(fd)
		return nil, func() {}
	}
	f := os.NewFile(uintptr(fd), "inotify")
	ch := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	// Closing an inotify descriptor waits for the kernel's fsnotify grace period (see
	// bench/README.md): not on the caller's time.
	return ch, func() { go f.Close() }
}
