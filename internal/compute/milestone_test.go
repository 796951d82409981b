package compute

import (
	"context"
	"log/slog"
	"sync"

	"github.com/computetools/compute-tools/internal/logx"
)

// recordHandler keeps the records logged through it, for assertions on milestones.
type recordHandler struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newRecordLogger() (*slog.Logger, *recordHandler) {
	h := &recordHandler{mu: &sync.Mutex{}, recs: &[]slog.Record{}}
	return slog.New(h), h
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r.Clone())
	return nil
}

func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// milestones returns how many records carried each MESSAGE_ID, and the level of the last.
func (h *recordHandler) milestones() (map[logx.MessageID]int, map[logx.MessageID]slog.Level) {
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
