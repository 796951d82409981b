// Package logx sets up log/slog for the binaries: logfmt-style text on stderr, with the
// level from COMPUTE_LOG_LEVEL. Under journald (stderr is the stream JOURNAL_STREAM names)
// it leaves the timestamp to the journal and starts each line with its syslog priority
// ("<4>" for a warning, which systemd's stream parser reads with the default
// SyslogLevelPrefix=yes), so `journalctl -p warning` works. Lifecycle milestones carry a
// stable MESSAGE_ID (see Milestone): such records go to the journal's native socket as
// one entry with MESSAGE_ID, PRIORITY and SYSLOG_IDENTIFIER fields, so
// `journalctl MESSAGE_ID=…` finds them; when the socket cannot be reached they are
// written to stderr like any other record.
package logx

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Journal says whether records go to journald.
type Journal int

const (
	// JournalAuto detects journald from JOURNAL_STREAM (the default).
	JournalAuto Journal = iota
	// JournalOn writes for journald: priority prefixes, no timestamps, native milestones.
	JournalOn
	// JournalOff writes plain text lines with timestamps.
	JournalOff
)

// DefaultJournalSocket is journald's native protocol socket.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// Options tune New; the zero value is what Setup uses.
type Options struct {
	// Level is the minimum level (default: COMPUTE_LOG_LEVEL, else info).
	Level slog.Leveler
	// Journal selects the output mode (default JournalAuto).
	Journal Journal
	// JournalSocket is the native journal socket (default DefaultJournalSocket).
	JournalSocket string
}

// Setup installs the default logger of a binary (component is its name) and returns it.
func Setup(w io.Writer, component string) *slog.Logger {
	l := New(w, component, Options{})
	slog.SetDefault(l)
	return l
}

// New returns a logger writing to w whose records carry component, without installing it.
func New(w io.Writer, component string, o Options) *slog.Logger {
	if o.Level == nil {
		o.Level = levelFromEnv()
	}
	journal := o.Journal == JournalOn || (o.Journal == JournalAuto && UnderJournal(w))
	if o.JournalSocket == "" {
		o.JournalSocket = DefaultJournalSocket
	}
	out := &output{w: w, journal: journal, socket: o.JournalSocket, identifier: component}
	text := slog.NewTextHandler(out, &slog.HandlerOptions{
		Level: o.Level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if journal && len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			if a.Key == MessageIDKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(&handler{inner: text, out: out}).With("component", component)
}

func levelFromEnv() slog.Level {
	switch strings.ToLower(os.Getenv("COMPUTE_LOG_LEVEL")) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Priority is the syslog priority of a level: 3 (err) from error up, 4 (warning) from
// warn, 5 (notice) above info, 6 (info) from info, 7 (debug) below.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l > slog.LevelInfo:
		return 5
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// handler renders records with a TextHandler into the shared output, telling it first
// the record's priority and MESSAGE_ID.
type handler struct {
	inner slog.Handler
	out   *output
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	id := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == MessageIDKey {
			id = a.Value.String()
			return false
		}
		return true
	})
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.priority, h.out.messageID = Priority(r.Level), id
	return h.inner.Handle(ctx, r)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{inner: h.inner.WithGroup(name), out: h.out}
}

// output receives each rendered line in one Write (slog's TextHandler writes a record at
// once), under mu held by handler.Handle.
type output struct {
	mu         sync.Mutex
	w          io.Writer
	journal    bool
	socket     string
	identifier string
	native     *nativeJournal

	// Of the record being written.
	priority  int
	messageID string
}

func (o *output) Write(line []byte) (int, error) {
	if !o.journal {
		return o.w.Write(line)
	}
	if o.messageID != "" {
		if o.native == nil {
			o.native = &nativeJournal{path: o.socket}
		}
		msg := strings.TrimSuffix(string(line), "\n")
		if o.native.send([]field{{"MESSAGE", msg}, {"PRIORITY", itoa(o.priority)},
			{"MESSAGE_ID", o.messageID}, {"SYSLOG_IDENTIFIER", o.identifier}}) == nil {
			return len(line), nil
		}
	}
	buf := make([]byte, 0, len(line)+3)
	buf = append(buf, '<')
	buf = append(buf, itoa(o.priority)...)
	buf = append(buf, '>')
	buf = append(buf, line...)
	if _, err := o.w.Write(buf); err != nil {
		return 0, err
	}
	return len(line), nil
}

func itoa(n int) string { return string(rune('0' + n)) }
