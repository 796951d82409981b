package clock

import (
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fdTicker is a ticker on a periodic CLOCK_MONOTONIC timerfd. A goroutine waits for the
// descriptor in the runtime's poller (no thread of its own) and passes each expiry on to
// C; like a time.Ticker it drops ticks a slow receiver has not taken (the channel holds
// one). Stop closes the descriptor, which ends the goroutine.
//
// The descriptor is read with a raw system call: the runtime's ordinary path
// (entersyscall) wakes sysmon when it sleeps, so that it may hand the processor of a
// blocked call to another thread, and sysmon then spins down through a few sleeps: a
// second thread's wake-up for every tick. A read of a readable timerfd cannot block.
type fdTicker struct {
	f    *os.File
	c    chan time.Time
	d    time.Duration
	done chan struct{} // closed by Stop

	mu      sync.Mutex // orders sends against Stop
	stopped bool
}

func newFDTicker(d time.Duration) (*fdTicker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking descriptor: os.NewFile puts it in the runtime's poller, silently
	// leaving it out when epoll refuses it (fs.epoll.max_user_watches reached, say);
	// SetReadDeadline fails on a file outside the poller, whose reads could never wait.
	t := &fdTicker{f: os.NewFile(uintptr(fd), "timerfd"), c: make(chan time.Time, 1), d: d, done: make(chan struct{})}
	if err := t.f.SetReadDeadline(time.Time{}); err != nil {
		t.f.Close()
		return nil, err
	}
	rc, err := t.f.SyscallConn()
	if err != nil {
		t.f.Close()
		return nil, err
	}
	go t.run(rc)
	return t, nil
}

func (t *fdTicker) run(rc interface {
	Read(func(fd uintptr) bool) error
}) {
	var expirations [8]byte // the count of expirations since the last read; not needed
	for {
		var rerr unix.Errno
		err := rc.Read(func(fd uintptr) bool {
			_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&expirations[0])), uintptr(len(expirations)))
			if e == unix.EAGAIN {
				return false // wait in the poller for the next expiry
			}
			rerr = e
			return true
		})
		if err != nil || rerr != 0 {
			select {
			case <-t.done:
				return // closed by Stop
			default:
			}
			// Not expected of a timerfd; rather than stop ticking, go on with a Go timer.
			t.fallback()
			return
		}
		if !t.send(time.Now()) {
			return
		}
	}
}

// send offers a tick unless the ticker is stopped; it reports whether it was not.
func (t *fdTicker) send(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	select {
	case t.c <- now:
	default: // the receiver has not taken the last tick: drop this one
	}
	return true
}

// fallback ticks from a time.Ticker until Stop.
func (t *fdTicker) fallback() {
	tk := time.NewTicker(t.d)
	defer tk.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tk.C:
			if !t.send(now) {
				return
			}
		}
	}
}

func (t *fdTicker) C() <-chan time.Time { return t.c }

// Stop stops the ticker: once it returns, C delivers nothing (a tick not yet received
// is dropped), as with time.Ticker since Go 1.23.
func (t *fdTicker) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	close(t.done)
	t.f.Close()
	select {
	case <-t.c:
	default:
	}
}
