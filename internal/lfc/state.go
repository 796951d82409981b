package lfc

import (
	"errors"
	"time"
)

// ms converts a duration to whole milliseconds, clamped to the u32 of Neon's fields.
func ms(d time.Duration) uint32 {
	m := d.Milliseconds()
	switch {
	case m < 0:
		return 0
	case m > int64(^uint32(0)):
		return ^uint32(0)
	}
	return uint32(m)
}

// Refusals of Start*; each is an HTTP 429 for the API (errors.Is tells them apart).
var (
	// ErrPrewarmRunning: a prewarm is already running. The API answers MsgPrewarmRunning.
	ErrPrewarmRunning = errors.New("a prewarm is already running")
	// ErrOffloadRunning: an offload is already running. The API answers MsgOffloadRunning.
	ErrOffloadRunning = errors.New("an offload is already running")
	// ErrPrewarmInProgress: a manual offload while a prewarm runs would upload an
	// incomplete LFC state, which the next start would prewarm from. Its text is the
	// API's answer.
	ErrPrewarmInProgress = errors.New("LFC offload refused: a prewarm is in progress, and an incomplete LFC state must not be uploaded")
)

// Neon's exact 429 messages for the two "already running" refusals.
const (
	MsgPrewarmRunning = "Multiple requests for prewarm are not allowed"
	MsgOffloadRunning = "Multiple requests for prewarm offload are not allowed"
)
