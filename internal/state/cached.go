package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// LoadCached is Load for frequent readers (compute-api's GET /status): it parses
// state.json again only when the file changed, and otherwise returns the record it
// parsed last. The record shares its pointers and maps with later calls: callers must
// not modify it.
//
// A change is never missed: every write replaces the file with a new one (an atomic
// rename, see write), and the cache keeps the file it read open, so that its inode
// cannot be freed and its number handed to a later file; a file at the path with the
// same device and inode number is the same file. Its size, mtime and ctime are compared
// as well, for a file rewritten in place by hand (the store never does that; such an
// edit is seen unless it keeps the size within one timestamp tick). A cache hit costs
// one lstat(2). The file is read as Load reads it: not through a symbolic link, a
// regular file only (a FIFO planted by the postgres user, who can write the directory,
// must not block the API), at most maxRecord bytes.
func (s *Store) LoadCached() (Record, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(s.Path(), &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.cache.drop()
			return Record{}, ErrNoState
		}
		return Record{}, fmt.Errorf("read state: %w", &fs.PathError{Op: "stat", Path: s.Path(), Err: err})
	}
	if r, ok := s.cache.get(keyOf(&st)); ok {
		return r, nil
	}
	f, err := os.OpenFile(s.Path(), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, ErrNoState
	}
	if errors.Is(err, syscall.ELOOP) {
		return Record{}, fmt.Errorf("read state: %s is a symbolic link", s.Path())
	}
	if err != nil {
		return Record{}, fmt.Errorf("read state: %w", err)
	}
	// The key is the opened file's own, so that it describes what is read even if the
	// path was replaced since the stat above.
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return Record{}, fmt.Errorf("read state: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		f.Close()
		return Record{}, fmt.Errorf("read state: %s is not a regular file", s.Path())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err == nil && len(b) > maxRecord {
		err = fmt.Errorf("larger than %d bytes", maxRecord)
	}
	if err != nil {
		f.Close()
		return Record{}, fmt.Errorf("read state: %w", err)
	}
	r, err := s.decode(b)
	if err != nil {
		f.Close()
		return Record{}, err
	}
	s.cache.put(keyOf(&st), f, r)
	return r, nil
}

// fileKey tells versions of state.json apart (see LoadCached).
type fileKey struct {
	dev, ino, size      uint64
	mtimeSec, mtimeNsec int64
	ctimeSec, ctimeNsec int64
}

func keyOf(st *syscall.Stat_t) fileKey {
	return fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino), size: uint64(st.Size),
		mtimeSec: int64(st.Mtim.Sec), mtimeNsec: int64(st.Mtim.Nsec),
		ctimeSec: int64(st.Ctim.Sec), ctimeNsec: int64(st.Ctim.Nsec)}
}

// loadCache is LoadCached's last parsed record and the open file it came from.
type loadCache struct {
	mu  sync.Mutex
	f   *os.File
	key fileKey
	rec Record
}

func (c *loadCache) get(k fileKey) (Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil || c.key != k {
		return Record{}, false
	}
	return c.rec, true
}

// put keeps f open (pinning its inode) until a newer file replaces it.
func (c *loadCache) put(k fileKey, f *os.File, r Record) {
	c.mu.Lock()
	old := c.f
	c.f, c.key, c.rec = f, k, r
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (c *loadCache) drop() {
	c.mu.Lock()
	old := c.f
	c.f, c.key, c.rec = nil, fileKey{}, Record{}
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
}
