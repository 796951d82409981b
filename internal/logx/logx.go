// Package logx sets up log/slog for the binaries: logfmt-style text on stderr, without
// timestamps when journald already adds them, with the level from COMPUTE_LOG_LEVEL.
package logx

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// Setup installs the default logger and returns it.
func Setup(w io.Writer, component string) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(os.Getenv("COMPUTE_LOG_LEVEL")) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	underJournal := os.Getenv("JOURNAL_STREAM") != ""
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if underJournal && len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	l := slog.New(h).With("component", component)
	slog.SetDefault(l)
	return l
}
