// Package statusview is the wire view of the state record that GET /status answers and
// `compute-init status` prints: Neon's ComputeStatusResponse, with times formatted as
// compute_ctl (Rust's chrono) formats them. It depends only on internal/state and the
// standard library, so both binaries can use it.
package statusview

import (
	"fmt"
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
	s := t.Format("2006-01-02T15:04:05")
	switch ns := t.Nanosecond(); {
	case ns == 0:
	case ns%1_000_000 == 0:
		s += fmt.Sprintf(".%03d", ns/1_000_000)
	case ns%1_000 == 0:
		s += fmt.Sprintf(".%06d", ns/1_000)
	default:
		s += fmt.Sprintf(".%09d", ns)
	}
	if z {
		return s + "Z"
	}
	return s + "+00:00"
}
