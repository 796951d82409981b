package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Every write is seen by the next LoadCached, however fast the writes come (same size,
// same timestamp tick), from this store or another process's.
func TestLoadCachedSeesEveryWrite(t *testing.T) {
	s := open(t)
	other, err := Open(s.Dir()) // another unit's store on the same directory
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCached(); !errors.Is(err, ErrNoState) {
		t.Fatalf("no record yet: %v, want ErrNoState", err)
	}
	for i := range 1000 {
		w := s
		if i%2 == 1 {
			w = other
		}
		want, err := w.Update(func(r *Record) error { r.MigrationID = i % 7; return nil })
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadCached()
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != want.Seq || got.MigrationID != want.MigrationID {
			t.Fatalf("write %d: cached read seq %d migration %d, want seq %d migration %d", i, got.Seq, got.MigrationID, want.Seq, want.MigrationID)
		}
	}
}

// An unchanged file is not read again: the same parsed record comes back.
func TestLoadCachedHit(t *testing.T) {
	s := open(t)
	if _, err := s.Update(func(r *Record) error { r.SetError("boom"); return nil }); err != nil {
		t.Fatal(err)
	}
	a, err := s.LoadCached()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.LoadCached()
	if err != nil {
		t.Fatal(err)
	}
	if a.Error == nil || a.Error != b.Error {
		t.Fatal("second read of an unchanged file parsed it again")
	}
	c, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Error == a.Error || *c.Error != *a.Error {
		t.Fatal("Load must read the file")
	}
}

// A corrupt file is an error each time (never cached), a removed one is no record, and
// a hand edit in place is seen.
func TestLoadCachedBadAndChangedFiles(t *testing.T) {
	s := open(t)
	if _, err := s.Update(func(r *Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCached(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(), []byte(`{"status":`), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.LoadCached(); err == nil {
			t.Fatal("corrupt file read without error")
		}
	}
	// In place (same inode), another size.
	if err := os.WriteFile(s.Path(), []byte(`{"status":"failed","seq":41}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := s.LoadCached()
	if err != nil || r.Status != Failed || r.Seq != 41 {
		t.Fatalf("hand-written record: %+v, %v", r, err)
	}
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCached(); !errors.Is(err, ErrNoState) {
		t.Fatalf("removed file: %v, want ErrNoState", err)
	}
}

// Concurrent readers and a writer: no reader ever sees an older record than one it saw
// before (run with -race).
func TestLoadCachedConcurrent(t *testing.T) {
	s := open(t)
	if _, err := s.Update(func(r *Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := s.LoadCached()
				if err != nil {
					errc <- err
					return
				}
				if r.Seq < last {
					errc <- errors.New("a reader went back in time")
					return
				}
				last = r.Seq
			}
		})
	}
	for range 300 {
		if _, err := s.Update(func(r *Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

// LoadCached reads as Load does: a symbolic link or a FIFO planted at the record's path
// (the postgres user can write the directory) is refused at once, never followed or
// waited on.
func TestLoadCachedRefusesLinksAndFIFOs(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "elsewhere.json")
	if err := os.WriteFile(target, []byte(`{"status":"running"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, s.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCached(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("LoadCached through a link: %v", err)
	}
	os.Remove(s.Path())
	if err := syscall.Mkfifo(s.Path(), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.LoadCached(); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadCached of a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadCached blocks on a FIFO")
	}
}
