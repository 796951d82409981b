package api

import (
	"fmt"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

// statusResponse is Neon's ComputeStatusResponse, fields in Neon's order.
type statusResponse struct {
	StartTime  string       `json:"start_time"`
	Tenant     *string      `json:"tenant"`
	Timeline   *string      `json:"timeline"`
	Status     state.Status `json:"status"`
	LastActive *string      `json:"last_active"`
	Error      *string      `json:"error"`
}

func newStatusResponse(r state.Record) statusResponse {
	resp := statusResponse{
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

// terminateResponse is Neon's TerminateResponse.
type terminateResponse struct {
	LSN *string `json:"lsn"`
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
