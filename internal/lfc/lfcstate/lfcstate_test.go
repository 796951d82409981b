package lfcstate

import (
	"encoding/json"
	"testing"
)

func TestJSON(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{PrewarmState{}, `{"status":"not_prewarmed","total":0,"prewarmed":0,"skipped":0}`},
		{PrewarmState{Status: PrewarmPrewarming, Progress: Progress{5, 2, 1}}, `{"status":"prewarming","total":5,"prewarmed":2,"skipped":1}`},
		{PrewarmState{Status: PrewarmCompleted, Progress: Progress{5, 4, 1}, Timings: PrewarmTimings{10, 20, 30}},
			`{"status":"completed","total":5,"prewarmed":4,"skipped":1,"state_download_time_ms":10,"uncompress_time_ms":20,"prewarm_time_ms":30}`},
		{PrewarmState{Status: PrewarmFailed, Error: "boom"}, `{"status":"failed","error":"boom","total":0,"prewarmed":0,"skipped":0}`},
		{PrewarmState{Status: PrewarmFailed}, `{"status":"failed","error":"","total":0,"prewarmed":0,"skipped":0}`},
		{PrewarmState{Status: PrewarmSkipped, Error: "ignored", Timings: PrewarmTimings{1, 2, 3}}, `{"status":"skipped","total":0,"prewarmed":0,"skipped":0}`},
		{PrewarmState{Status: PrewarmCancelled}, `{"status":"cancelled","total":0,"prewarmed":0,"skipped":0}`},
		{OffloadState{}, `{"status":"not_offloaded"}`},
		{OffloadState{Status: OffloadOffloading}, `{"status":"offloading"}`},
		{OffloadState{Status: OffloadCompleted, Timings: OffloadTimings{1, 2, 3}}, `{"status":"completed","state_query_time_ms":1,"compress_time_ms":2,"state_upload_time_ms":3}`},
		{OffloadState{Status: OffloadFailed, Error: "x"}, `{"status":"failed","error":"x"}`},
		{OffloadState{Status: OffloadSkipped}, `{"status":"skipped"}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Errorf("%+v: %v", tc.v, err)
			continue
		}
		if string(b) != tc.want {
			t.Errorf("%+v:\n got %s\nwant %s", tc.v, b, tc.want)
		}
		// Round trip.
		switch v := tc.v.(type) {
		case PrewarmState:
			var back PrewarmState
			if err := json.Unmarshal(b, &back); err != nil {
				t.Errorf("%s: %v", b, err)
			}
			b2, _ := json.Marshal(back)
			if string(b2) != string(b) {
				t.Errorf("round trip of %s gave %s", b, b2)
			}
			_ = v
		case OffloadState:
			var back OffloadState
			if err := json.Unmarshal(b, &back); err != nil {
				t.Errorf("%s: %v", b, err)
			}
			b2, _ := json.Marshal(back)
			if string(b2) != string(b) {
				t.Errorf("round trip of %s gave %s", b, b2)
			}
		}
	}
	// An unknown status (a newer version's record) is kept, never refused: a refusal
	// would make the whole state record unreadable.
	var p PrewarmState
	if err := json.Unmarshal([]byte(`{"status":"paused","total":1,"prewarmed":1,"skipped":0}`), &p); err != nil || p.Status != "paused" || p.Status.Valid() {
		t.Errorf("unknown prewarm status: %+v, %v", p, err)
	}
	if b, err := json.Marshal(p); err != nil || string(b) != `{"status":"paused","total":1,"prewarmed":1,"skipped":0}` {
		t.Errorf("unknown prewarm status written as %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`[1]`), &p); err == nil {
		t.Error("prewarm from an array")
	}
	var o OffloadState
	if err := json.Unmarshal([]byte(`{"status":"paused"}`), &o); err != nil || o.Status != "paused" || o.Status.Valid() {
		t.Errorf("unknown offload status: %+v, %v", o, err)
	}
	if b, err := json.Marshal(o); err != nil || string(b) != `{"status":"paused"}` {
		t.Errorf("unknown offload status written as %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`"x"`), &o); err == nil {
		t.Error("offload from a string")
	}
	// WithProgress keeps a completed prewarm's own count.
	c := PrewarmState{Status: PrewarmCompleted, Progress: Progress{1, 1, 0}}
	if got := c.WithProgress(Progress{9, 9, 9}); got.Progress != (Progress{1, 1, 0}) {
		t.Errorf("completed progress replaced: %+v", got)
	}
	if got := (PrewarmState{Status: PrewarmFailed}).WithProgress(Progress{9, 3, 1}); got.Progress != (Progress{9, 3, 1}) {
		t.Errorf("failed progress not set: %+v", got)
	}
}
