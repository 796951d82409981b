// Package statetest puts a state record into any status for tests of the packages that
// read it, which the lifecycle operations (the only way a status changes in production)
// could reach only through many steps. It writes the file as the store does (under the
// store's lock, the sequence number continued, OnChange called). Production code must
// not import it; internal/state's TestNoStatusWritesOutsideState checks that.
package statetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

// Set gives the record status st, with fn (may be nil) applied to the other fields,
// whatever the status was and whether or not the move is legal. It returns the record
// written. Fakes of the units use it to stand in for the units' own writes.
func Set(s *state.Store, st state.Status, fn func(*state.Record)) (state.Record, error) {
	return put(s, func(r *state.Record) {
		r.Status = st
		if fn != nil {
			fn(r)
		}
	})
}

// MustSet is Set for a test's own goroutine: an error ends the test.
func MustSet(t testing.TB, s *state.Store, st state.Status, fn func(*state.Record)) state.Record {
	t.Helper()
	r, err := Set(s, st, fn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Reset writes a fresh empty record, as a new lifecycle would (counters kept).
func Reset(s *state.Store) (state.Record, error) {
	return put(s, func(r *state.Record) {
		*r = state.Record{Status: state.Empty, StartTime: time.Now().UTC(), Counters: r.Counters, Seq: r.Seq}
	})
}

func put(s *state.Store, fn func(*state.Record)) (state.Record, error) {
	f, err := os.OpenFile(filepath.Join(s.Dir(), state.LockFile), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return state.Record{}, fmt.Errorf("statetest: open lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return state.Record{}, fmt.Errorf("statetest: lock: %w", err)
	}
	r, err := s.Load()
	if errors.Is(err, state.ErrNoState) {
		r, err = state.Record{Status: state.Empty, StartTime: time.Now().UTC()}, nil
	}
	if err != nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return state.Record{}, fmt.Errorf("statetest: %w", err)
	}
	fn(&r)
	r.Seq++
	r.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		tmp := s.Path() + ".statetest"
		if err = os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			err = os.Rename(tmp, s.Path())
		}
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err != nil {
		return state.Record{}, fmt.Errorf("statetest: write: %w", err)
	}
	if s.OnChange != nil {
		s.OnChange(r)
	}
	return r, nil
}
