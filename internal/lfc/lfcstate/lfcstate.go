// Package lfcstate holds the LFC prewarm and offload states as Neon's compute API shows
// them (LfcPrewarmState and LfcOffloadState, tagged by `status`) and their counters: the
// vocabulary shared by compute-monitor, which runs prewarms and offloads (internal/lfc)
// and publishes these into the state record, and compute-api, which serves them; and the
// answers of compute-monitor to compute-api's requests (RefusedError, ErrUnavailable,
// ErrNoAnswer), whatever carries them (D-Bus, internal/bus). It has
// no dependencies beyond the standard library, so the state record can hold them.
package lfcstate

import (
	"encoding/json"
	"errors"
	"slices"
)

// PrewarmStatus is the `status` of GET /lfc/prewarm (Neon's LfcPrewarmState tag).
type PrewarmStatus string

// The prewarm statuses. Cancelled is beyond the reference commit (Neon added it later).
const (
	PrewarmNotPrewarmed PrewarmStatus = "not_prewarmed"
	PrewarmPrewarming   PrewarmStatus = "prewarming"
	PrewarmCompleted    PrewarmStatus = "completed"
	PrewarmFailed       PrewarmStatus = "failed"
	PrewarmSkipped      PrewarmStatus = "skipped"
	PrewarmCancelled    PrewarmStatus = "cancelled"
)

// OffloadStatus is the `status` of GET /lfc/offload (Neon's LfcOffloadState tag).
type OffloadStatus string

// The offload statuses. Skipped (an empty LFC state, not uploaded) is beyond the
// reference commit (Neon added it later).
const (
	OffloadNotOffloaded OffloadStatus = "not_offloaded"
	OffloadOffloading   OffloadStatus = "offloading"
	OffloadCompleted    OffloadStatus = "completed"
	OffloadFailed       OffloadStatus = "failed"
	OffloadSkipped      OffloadStatus = "skipped"
)

// A status that is not one of these (a state record written by a newer version, read
// after a downgrade) is kept as it is by the JSON methods rather than refused: the state
// record holds these states, and a refusal would make the whole record unreadable for
// every unit. compute-monitor replaces such a status when it restores a machine
// (internal/lfc MachineOptions.Restore).

// PrewarmStatuses are all the prewarm statuses, in the order of Neon's OpenAPI enum.
var PrewarmStatuses = []PrewarmStatus{PrewarmNotPrewarmed, PrewarmPrewarming, PrewarmCompleted, PrewarmFailed, PrewarmSkipped, PrewarmCancelled}

// OffloadStatuses are all the offload statuses, in the order of Neon's OpenAPI enum.
var OffloadStatuses = []OffloadStatus{OffloadNotOffloaded, OffloadOffloading, OffloadCompleted, OffloadFailed, OffloadSkipped}

// Valid reports whether s is one of the prewarm statuses.
func (s PrewarmStatus) Valid() bool { return slices.Contains(PrewarmStatuses, s) }

// Valid reports whether s is one of the offload statuses.
func (s OffloadStatus) Valid() bool { return slices.Contains(OffloadStatuses, s) }

// Progress is what neon.get_prewarm_info() reports (its first three columns).
type Progress struct {
	Total     int32 `json:"total"`
	Prewarmed int32 `json:"prewarmed"`
	Skipped   int32 `json:"skipped"`
}

// PrewarmTimings are the durations a completed prewarm carries, in milliseconds.
type PrewarmTimings struct {
	StateDownloadMs uint32 `json:"state_download_time_ms"`
	UncompressMs    uint32 `json:"uncompress_time_ms"`
	PrewarmMs       uint32 `json:"prewarm_time_ms"`
}

// OffloadTimings are the durations a completed offload carries, in milliseconds.
type OffloadTimings struct {
	StateQueryMs  uint32 `json:"state_query_time_ms"`
	CompressMs    uint32 `json:"compress_time_ms"`
	StateUploadMs uint32 `json:"state_upload_time_ms"`
}

// PrewarmState is the prewarm state. Its JSON is GET /lfc/prewarm's body: `status`;
// `error` only when failed; `total`, `prewarmed` and `skipped` always (Neon's OpenAPI
// document requires them); the timings only when completed.
type PrewarmState struct {
	Status PrewarmStatus
	// Error is the reason of a failed prewarm.
	Error string
	// Progress is the final count of a completed prewarm, or live progress set by
	// WithProgress for an answer.
	Progress Progress
	// Timings of a completed prewarm.
	Timings PrewarmTimings
}

// OffloadState is the offload state. Its JSON is GET /lfc/offload's body: `status`;
// `error` only when failed; the timings only when completed.
type OffloadState struct {
	Status  OffloadStatus
	Error   string
	Timings OffloadTimings
}

// WithProgress returns s carrying p as its progress, unless s is completed (which keeps
// its own final count).
func (s PrewarmState) WithProgress(p Progress) PrewarmState {
	if s.Status != PrewarmCompleted {
		s.Progress = p
	}
	return s
}

type prewarmJSON struct {
	Status    PrewarmStatus `json:"status"`
	Error     *string       `json:"error,omitempty"`
	Total     int32         `json:"total"`
	Prewarmed int32         `json:"prewarmed"`
	Skipped   int32         `json:"skipped"`
	*PrewarmTimings
}

// MarshalJSON writes the wire form described on PrewarmState.
func (s PrewarmState) MarshalJSON() ([]byte, error) {
	st := s.Status
	if st == "" {
		st = PrewarmNotPrewarmed
	}
	j := prewarmJSON{Status: st, Total: s.Progress.Total, Prewarmed: s.Progress.Prewarmed, Skipped: s.Progress.Skipped}
	if st == PrewarmFailed {
		e := s.Error
		j.Error = &e
	}
	if st == PrewarmCompleted {
		t := s.Timings
		j.PrewarmTimings = &t
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the wire form (a state kept in a record, or a test's answer).
func (s *PrewarmState) UnmarshalJSON(b []byte) error {
	var j prewarmJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = PrewarmState{Status: j.Status, Progress: Progress{Total: j.Total, Prewarmed: j.Prewarmed, Skipped: j.Skipped}}
	if j.Error != nil {
		s.Error = *j.Error
	}
	if j.PrewarmTimings != nil {
		s.Timings = *j.PrewarmTimings
	}
	return nil
}

type offloadJSON struct {
	Status OffloadStatus `json:"status"`
	Error  *string       `json:"error,omitempty"`
	*OffloadTimings
}

// MarshalJSON writes the wire form described on OffloadState.
func (s OffloadState) MarshalJSON() ([]byte, error) {
	st := s.Status
	if st == "" {
		st = OffloadNotOffloaded
	}
	j := offloadJSON{Status: st}
	if st == OffloadFailed {
		e := s.Error
		j.Error = &e
	}
	if st == OffloadCompleted {
		t := s.Timings
		j.OffloadTimings = &t
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the wire form.
func (s *OffloadState) UnmarshalJSON(b []byte) error {
	var j offloadJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = OffloadState{Status: j.Status}
	if j.Error != nil {
		s.Error = *j.Error
	}
	if j.OffloadTimings != nil {
		s.Timings = *j.OffloadTimings
	}
	return nil
}

// Counters are the plain counts behind compute_ctl_lfc_prewarms_total,
// compute_ctl_lfc_prewarm_errors_total, compute_ctl_lfc_offloads_total and
// compute_ctl_lfc_offload_errors_total.
type Counters struct {
	// Prewarms counts prewarms taken (a refused request is not counted).
	Prewarms uint64 `json:"compute_ctl_lfc_prewarms_total"`
	// PrewarmErrors counts prewarms that ended failed (not skipped, not cancelled).
	PrewarmErrors uint64 `json:"compute_ctl_lfc_prewarm_errors_total"`
	// Offloads counts offloads taken, manual and periodic.
	Offloads uint64 `json:"compute_ctl_lfc_offloads_total"`
	// OffloadErrors counts offloads that ended failed.
	OffloadErrors uint64 `json:"compute_ctl_lfc_offload_errors_total"`
}

// States are the prewarm and offload states of one lifecycle, as compute-monitor
// publishes them into the state record. Seq is the publishing machine's (internal/lfc
// Snapshot.Seq): a writer never replaces a record's States by older ones.
type States struct {
	Seq     uint64       `json:"seq"`
	Prewarm PrewarmState `json:"prewarm"`
	Offload OffloadState `json:"offload"`
}

// Refusal says why compute-monitor did not take an LFC request.
type Refusal int

// The refusals; compute-api answers 429, 412, 412 and 400.
const (
	// RefusedBusy: the operation (or one that excludes it) is running.
	RefusedBusy Refusal = iota + 1
	// RefusedNotRunning: the compute is not running, so there is no LFC to work on.
	RefusedNotRunning
	// RefusedNoExtension: the neon extension, which has the LFC functions, is not
	// installed.
	RefusedNoExtension
	// RefusedInvalid: an argument is invalid (an endpoint id).
	RefusedInvalid
)

// RefusedError is a request compute-monitor refused; Msg is the reason, fit for the API's
// answer.
type RefusedError struct {
	Refusal Refusal
	Msg     string
}

func (e *RefusedError) Error() string { return e.Msg }

// The failures of a request to compute-monitor that are not its answer.
var (
	// ErrUnavailable: no compute-monitor to ask (its unit is stopped or restarting, or
	// the caller has no bus connection).
	ErrUnavailable = errors.New("compute-monitor is not available")
	// ErrNoAnswer: compute-monitor did not answer in time; it may have taken the request
	// (the states tell).
	ErrNoAnswer = errors.New("compute-monitor did not answer in time; the request may have been taken (see the state)")
)
