package logxtest

import (
	"log/slog"
	"testing"

	"github.com/computetools/compute-tools/internal/logx"
)

func TestRecorderCountsMilestones(t *testing.T) {
	log, rec := NewRecorder()
	logx.Milestone(log, logx.MsgRunning, "running")
	logx.Milestone(log.With("component", "x"), logx.MsgFailed, "failed", "err", "boom")
	logx.Milestone(log, logx.MsgFailed, "failed again")
	log.Info("not a milestone")
	n, lv := rec.Milestones()
	if n[logx.MsgRunning] != 1 || n[logx.MsgFailed] != 2 || len(n) != 2 {
		t.Errorf("counts %v", n)
	}
	if lv[logx.MsgRunning] != slog.LevelInfo || lv[logx.MsgFailed] != slog.LevelError {
		t.Errorf("levels %v", lv)
	}
}
