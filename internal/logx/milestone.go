package logx

import (
	"context"
	"log/slog"
	"time"
)

// MessageID is a journal MESSAGE_ID: a fixed 128-bit id in hex, one per kind of event.
type MessageID string

// MessageIDKey is the attribute key that carries a MessageID. The text output drops it;
// under journald the record becomes a native entry with that field.
const MessageIDKey = "MESSAGE_ID"

// The lifecycle milestones (`journalctl MESSAGE_ID=<id>`). Never change an id: operators
// and alerts keep them.
const (
	// MsgConfigAccepted: a config was accepted (file, control plane, POST /configure, or
	// the TLS renewal watcher resubmitting the applied config).
	MsgConfigAccepted MessageID = "87f0458e1acd2593d3edd685cd8fdd21"
	// MsgRunning: the compute reached running.
	MsgRunning MessageID = "1325aea684b4e765625f17bf516ac4b2"
	// MsgReconfigured: a running compute applied a new config.
	MsgReconfigured MessageID = "48ea9b88506e7a36fe860b80ac8316d0"
	// MsgTerminated: the compute is terminated.
	MsgTerminated MessageID = "eee716d585b5c4b40faeb9c11db47379"
	// MsgPromoted: a replica was promoted to a primary (POST /promote).
	MsgPromoted MessageID = "5cd6ab55fef5421b9d9063b6f674ef74"
	// MsgFailed: the compute failed.
	MsgFailed MessageID = "ff54d0f2c1b55dd80bd7f6aac39611c4"
)

// Milestones lists every milestone id.
var Milestones = []MessageID{MsgConfigAccepted, MsgRunning, MsgReconfigured, MsgPromoted, MsgTerminated, MsgFailed}

// Attr is the attribute that gives a record this MESSAGE_ID.
func (id MessageID) Attr() slog.Attr { return slog.String(MessageIDKey, string(id)) }

// Level is the level a milestone is logged at: error for MsgFailed, info otherwise.
func (id MessageID) Level() slog.Level {
	if id == MsgFailed {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Milestone logs a lifecycle milestone with its MESSAGE_ID, at id.Level(); args are
// key-value pairs or attributes as for slog.Logger.Info. A milestone is logged whatever
// the logger's level (COMPUTE_LOG_LEVEL=warning still shows when the compute ran):
// the record goes to the handler without the level check.
func Milestone(l *slog.Logger, id MessageID, msg string, args ...any) {
	r := slog.NewRecord(time.Now(), id.Level(), msg, 0)
	r.Add(args...)
	r.AddAttrs(id.Attr())
	_ = l.Handler().Handle(context.Background(), r)
}
