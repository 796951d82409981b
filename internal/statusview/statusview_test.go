package statusview

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/state"
)

func TestChronoTime(t *testing.T) {
	base := time.Date(2022, 10, 12, 7, 20, 50, 0, time.UTC)
	tests := []struct {
		ns    int
		z, tz string
	}{
		{0, "2022-10-12T07:20:50Z", "2022-10-12T07:20:50+00:00"},
		{520_000_000, "2022-10-12T07:20:50.520Z", "2022-10-12T07:20:50.520+00:00"},
		{123_456_000, "2022-10-12T07:20:50.123456Z", "2022-10-12T07:20:50.123456+00:00"},
		{100, "2022-10-12T07:20:50.000000100Z", "2022-10-12T07:20:50.000000100+00:00"},
	}
	for _, tc := range tests {
		tm := base.Add(time.Duration(tc.ns)).In(time.FixedZone("X", -5*3600))
		if got := chronoTime(tm, true); got != tc.z {
			t.Errorf("chronoTime(%d ns, Z) = %s, want %s", tc.ns, got, tc.z)
		}
		if got := chronoTime(tm, false); got != tc.tz {
			t.Errorf("chronoTime(%d ns, +00:00) = %s, want %s", tc.ns, got, tc.tz)
		}
	}
}

func TestOf(t *testing.T) {
	tenant := "tenant-1"
	active := time.Date(2025, 7, 17, 10, 5, 0, 0, time.UTC)
	r := state.Record{Status: state.Failed, StartTime: time.Date(2025, 7, 17, 12, 0, 1, 123456789, time.UTC),
		Tenant: &tenant, LastActive: &active}
	r.SetError("startup: boom")
	b, err := json.Marshal(Of(r))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"start_time":"2025-07-17T12:00:01.123456789Z","tenant":"tenant-1","timeline":null,` +
		`"status":"failed","last_active":"2025-07-17T10:05:00+00:00","error":"startup: boom"}`
	if string(b) != want {
		t.Fatalf("body\n got %s\nwant %s", b, want)
	}
}

func TestOfEmptyRecord(t *testing.T) {
	b, err := json.Marshal(Of(state.Record{Status: state.Empty}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"start_time":"0001-01-01T00:00:00Z","tenant":null,"timeline":null,"status":"empty","last_active":null,"error":null}`
	if string(b) != want {
		t.Fatalf("body\n got %s\nwant %s", b, want)
	}
}
