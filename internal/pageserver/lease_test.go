package pageserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageservertest"
)

func TestLeaseLSN(t *testing.T) {
	str := func(s string) *string { return &s }
	until := time.UnixMilli(1_900_000_000_123)
	tests := []struct {
		name      string
		answer    *string
		faults    pageservertest.Faults
		want      time.Time
		wantErr   error
		errSubstr string
	}{
		{"granted, ms since epoch", str("1900000000123"), pageservertest.Faults{}, until, nil, ""},
		{"granted, timestamp", str(until.UTC().Format(time.RFC3339Nano)), pageservertest.Faults{}, until, nil, ""},
		{"not granted", nil, pageservertest.Faults{}, time.Time{}, pageserver.ErrLeaseNotGranted, ""},
		{"garbage", str("soon"), pageservertest.Faults{}, time.Time{}, nil, "cannot parse"},
		{"server error", str("1"), pageservertest.Faults{LeaseError: "tenant not found"}, time.Time{}, nil, "tenant not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			f := pageservertest.Start(t, pageservertest.Options{Password: token, Faults: tc.faults,
				ValidUntil: func(tn, tl, lsn string) *string {
					asked = append(asked, tn, tl, lsn)
					return tc.answer
				}})
			got, err := pageserver.LeaseLSN(context.Background(), f.Connstr(), token, tenant, timeline, "0/16b5a50")
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
			case tc.errSubstr != "":
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("error %v, want %q", err, tc.errSubstr)
				}
			case err != nil:
				t.Fatal(err)
			case !got.Equal(tc.want):
				t.Errorf("valid until %v, want %v", got, tc.want)
			}
			q := f.Queries()
			if want := "lease lsn " + tenant + " " + timeline + " 0/16B5A50 "; len(q) != 1 || q[0] != want {
				t.Errorf("queries %q, want [%q]", q, want)
			}
			if s := f.Sessions(); len(s) != 1 || s[0].Password != token {
				t.Errorf("sessions %+v", s)
			}
		})
	}
}

// A pageserver that never answers the lease query fails the request after the idle
// timeout, with the stall named (the lease loop then retries with its backoff).
func TestLeaseLSNStall(t *testing.T) {
	f := pageservertest.Start(t, pageservertest.Options{Password: token, Faults: pageservertest.Faults{Stall: true}})
	_, err := pageserver.LeaseLSNIdle(context.Background(), 200*time.Millisecond, f.Connstr(), token, tenant, timeline, "0/16b5a50")
	var stall *pageserver.StallError
	if !errors.As(err, &stall) || !strings.Contains(err.Error(), "lease lsn") {
		t.Fatalf("error %v, want a stall", err)
	}
	if len(f.Queries()) != 1 {
		t.Errorf("queries %q, want the lease query", f.Queries())
	}
}
