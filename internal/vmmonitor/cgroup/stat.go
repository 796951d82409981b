package cgroup

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
)

// ParseMemoryStat returns the non-reclaimable memory of a cgroup v2 memory.stat:
// active_anon + inactive_anon, in bytes, as the reference counts it. Both keys must be
// present.
func ParseMemoryStat(b []byte) (uint64, error) {
	var active, inactive uint64
	var haveActive, haveInactive bool
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "active_anon":
			dst, haveActive = &active, true
		case "inactive_anon":
			dst, haveInactive = &inactive, true
		default:
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("memory.stat: %s: %w", key, err)
		}
		*dst = n
	}
	if !haveActive || !haveInactive {
		return 0, fmt.Errorf("memory.stat: no active_anon and inactive_anon (not a cgroup v2 memory controller?)")
	}
	return active + inactive, nil
}

// Events are the counters of a cgroup v2 memory.events file: how often the cgroup went
// over memory.low (low), was throttled over memory.high (high), reached memory.max
// (max), failed to allocate at memory.max (oom) and had a process killed by the OOM
// killer (oom_kill).
type Events struct {
	Low, High, Max, OOM, OOMKill uint64
}

// ParseMemoryEvents parses memory.events; keys it does not know are skipped, missing
// keys are 0.
func ParseMemoryEvents(b []byte) (Events, error) {
	var e Events
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "low":
			dst = &e.Low
		case "high":
			dst = &e.High
		case "max":
			dst = &e.Max
		case "oom":
			dst = &e.OOM
		case "oom_kill":
			dst = &e.OOMKill
		default:
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 64)
		if err != nil {
			return Events{}, fmt.Errorf("memory.events: %s: %w", key, err)
		}
		*dst = n
	}
	return e, nil
}

// readInto reads the whole file at path into buf (grown when too small) and returns
// the bytes read. The watcher reads the same small files ten times a second; reusing
// one buffer keeps that allocation-free.
func readInto(path string, buf *[]byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if cap(*buf) == 0 {
		*buf = make([]byte, 0, 8192)
	}
	b := (*buf)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	*buf = b
	return b, nil
}
