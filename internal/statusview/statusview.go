// Package statusview is the wire view of the state record that GET /status answers and
// `compute-init status` prints: Neon's ComputeStatusResponse, with times formatted as
// compute_ctl (Rust's chrono) formats them. It depends only on internal/state and the
// standard library, so both binaries can use it.
package statusview

import (
	"strconv"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

// Response is Neon's ComputeStatusResponse, fields in Neon's order.
type Response struct {
	StartTime  string       `json:"start_time"`
	Tenant     *string      `json:"tenant"`
	Timeline   *string      `json:"timeline"`
	Status     state.Status `json:"status"`
	LastActive *string      `json:"last_active"`
	Error      *string      `json:"error"`
}

// Of is the ComputeStatusResponse body for a record.
func Of(r state.Record) Response {
	resp := Response{
		StartTime: chronoTime(r.StartTime, true),
		Tenant:    r.Tenant,
		Timeline:  r.Timeline,
		Status:    r.Status,
		Error:     r.Error,
	}
	if r.LastActive != nil {
		s := chronoTime(*r.LastActive, false)
		resp.LastActive = &s
	}
	return resp
}

// chronoTime formats t in UTC as Rust's chrono does: the fraction has 0, 3, 6 or 9 digits
// (chrono's "AutoSi"), and the offset is "Z" (serde serialization, used for start_time)
// or "+00:00" (to_rfc3339, used for last_active).
func chronoTime(t time.Time, z bool) string {
	t = t.UTC()
	b := make([]byte, 0, len("2006-01-02T15:04:05.000000000+00:00"))
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	frac := func(v, digits int) {
		b = append(b, '.')
		s := strconv.Itoa(v)
		for range digits - len(s) {
			b = append(b, '0')
		}
		b = append(b, s...)
	}
	switch ns := t.Nanosecond(); {
	case ns == 0:
	case ns%1_000_000 == 0:
		frac(ns/1_000_000, 3)
	case ns%1_000 == 0:
		frac(ns/1_000, 6)
	default:
		frac(ns, 9)
	}
	if z {
		return string(append(b, 'Z'))
	}
	return string(append(b, "+00:00"...))
}
