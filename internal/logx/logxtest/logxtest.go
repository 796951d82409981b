// Package logxtest records what a component logs, for tests that assert on log records
// (the milestones with their MESSAGE_ID above all). Production code must not import it.
package logxtest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/computetools/compute-tools/internal/logx"
)

// Recorder is an slog.Handler that keeps every record logged through it. Attributes
// added with With are not kept: milestones carry their MESSAGE_ID on the record itself.
type Recorder struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

// NewRecorder returns a logger that records into the returned Recorder.
func NewRecorder() (*slog.Logger, *Recorder) {
	h := &Recorder{mu: &sync.Mutex{}, recs: &[]slog.Record{}}
	return slog.New(h), h
}

// Enabled records every level.
func (h *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps a copy of r.
func (h *Recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r.Clone())
	return nil
}

// WithAttrs returns the same recorder (see Recorder).
func (h *Recorder) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup returns the same recorder.
func (h *Recorder) WithGroup(string) slog.Handler { return h }

// Milestones returns how many records carried each MESSAGE_ID, and the level of the last.
func (h *Recorder) Milestones() (map[logx.MessageID]int, map[logx.MessageID]slog.Level) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, lv := map[logx.MessageID]int{}, map[logx.MessageID]slog.Level{}
	for _, r := range *h.recs {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == logx.MessageIDKey {
				id := logx.MessageID(a.Value.String())
				n[id]++
				lv[id] = r.Level
			}
			return true
		})
	}
	return n, lv
}
