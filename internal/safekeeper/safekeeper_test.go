package safekeeper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/sktest"
	"github.com/computetools/compute-tools/internal/spec"
)

const (
	tenant   = "9ef87a5bf0d92544f6fafeeb3239695c"
	timeline = "de200bd42b49cc1814412c7e592dd6e9"
	token    = "sk-test-token-5e1f"
	// slow is well beyond PingTimeout; the fakes cut the wait short when closed.
	slow = 5 * time.Second
)

func lsn(t *testing.T, s string) spec.Lsn {
	t.Helper()
	l, err := spec.ParseLsn(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDecide(t *testing.T) {
	st := func(flush, commit string) TimelineStatus {
		return TimelineStatus{Known: true, FlushLSN: lsn(t, flush), CommitLSN: lsn(t, commit)}
	}
	unknown := TimelineStatus{}
	tests := []struct {
		name    string
		n       int
		answers []TimelineStatus
		want    string
		synced  bool
	}{
		{"all agree", 3, []TimelineStatus{st("0/16B3748", "0/16B3748"), st("0/16B3748", "0/16B3748")}, "0/16B3748", true},
		{"full set agrees", 3, []TimelineStatus{st("1/A0", "1/A0"), st("1/A0", "1/A0"), st("1/A0", "1/A0")}, "1/A0", true},
		{"single safekeeper", 1, []TimelineStatus{st("0/5", "0/5")}, "0/5", true},
		{"below quorum", 3, []TimelineStatus{st("0/5", "0/5")}, "", false},
		{"no answers", 3, nil, "", false},
		{"no safekeepers", 0, nil, "", false},
		{"even count needs three", 4, []TimelineStatus{st("0/5", "0/5"), st("0/5", "0/5")}, "", false},
		{"even count with three", 4, []TimelineStatus{st("0/5", "0/5"), st("0/5", "0/5"), st("0/5", "0/5")}, "0/5", true},
		{"commit differs", 3, []TimelineStatus{st("0/5", "0/5"), st("0/5", "0/4")}, "", false},
		{"flush differs", 3, []TimelineStatus{st("0/6", "0/5"), st("0/5", "0/5")}, "", false},
		{"commit behind flush", 3, []TimelineStatus{st("0/6", "0/5"), st("0/6", "0/5")}, "", false},
		{"one unknown", 3, []TimelineStatus{st("0/5", "0/5"), unknown}, "", false},
		{"all unknown", 3, []TimelineStatus{unknown, unknown}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Decide(tc.n, tc.answers)
			if ok != tc.synced {
				t.Fatalf("synced = %v, want %v", ok, tc.synced)
			}
			if ok && got.String() != tc.want {
				t.Fatalf("lsn = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3} {
		if got := Quorum(n); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", n, got, want)
		}
	}
}

// fakes starts n fake safekeepers, all synced at at.
func fakes(t *testing.T, n int, at string) ([]*sktest.FakeSafekeeper, []string) {
	t.Helper()
	var sks []*sktest.FakeSafekeeper
	var addrs []string
	for range n {
		sk := sktest.NewFakeSafekeeper(t, tenant, timeline, token)
		sk.SetStatus(at, at)
		sks = append(sks, sk)
		addrs = append(addrs, sk.Addr)
	}
	return sks, addrs
}

func TestCheckSynced(t *testing.T) {
	const at = "0/16B5A50"
	tests := []struct {
		name   string
		n      int
		setup  func(sks []*sktest.FakeSafekeeper)
		token  string
		synced bool
	}{
		{"all synced", 3, func([]*sktest.FakeSafekeeper) {}, token, true},
		{"one slow", 3, func(s []*sktest.FakeSafekeeper) { s[1].SetDelay(slow) }, token, true},
		{"one refusing", 3, func(s []*sktest.FakeSafekeeper) { s[0].Refuse() }, token, true},
		{"one failing", 3, func(s []*sktest.FakeSafekeeper) { s[2].SetError("disk on fire") }, token, true},
		{"two slow", 3, func(s []*sktest.FakeSafekeeper) { s[0].SetDelay(slow); s[2].SetDelay(slow) }, token, false},
		{"two refusing", 3, func(s []*sktest.FakeSafekeeper) { s[0].Refuse(); s[1].Refuse() }, token, false},
		{"commit differs", 3, func(s []*sktest.FakeSafekeeper) {
			// No two agree, whichever two answer first.
			s[0].SetStatus("0/16B5A50", "0/16B5A50")
			s[1].SetStatus("0/16B5A50", "0/16B5A48")
			s[2].SetStatus("0/16B5A50", "0/16B5A40")
		}, token, false},
		{"commit behind flush everywhere", 3, func(s []*sktest.FakeSafekeeper) {
			for _, sk := range s {
				sk.SetStatus("0/16B5A50", "0/16B5A00")
			}
		}, token, false},
		{"unknown timeline", 3, func(s []*sktest.FakeSafekeeper) {
			for _, sk := range s {
				sk.SetUnknownTimeline()
			}
		}, token, false},
		{"garbage lsn counts as failure", 3, func(s []*sktest.FakeSafekeeper) {
			s[0].SetStatus("not-an-lsn", "not-an-lsn")
			s[1].SetStatus("nope", "nope")
		}, token, false},
		{"even count, one slow", 4, func(s []*sktest.FakeSafekeeper) { s[3].SetDelay(slow) }, token, true},
		{"even count, two slow", 4, func(s []*sktest.FakeSafekeeper) { s[0].SetDelay(slow); s[3].SetDelay(slow) }, token, false},
		{"wrong token", 3, func([]*sktest.FakeSafekeeper) {}, "wrong-token", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sks, addrs := fakes(t, tc.n, at)
			tc.setup(sks)
			got, ok, err := CheckSynced(context.Background(), addrs, tenant, timeline, tc.token, nil)
			if err != nil {
				t.Fatalf("CheckSynced: %v", err)
			}
			if ok != tc.synced {
				t.Fatalf("synced = %v (lsn %q), want %v", ok, got, tc.synced)
			}
			if ok && got != at {
				t.Fatalf("lsn = %q, want %q", got, at)
			}
			if !ok && got != "" {
				t.Fatalf("lsn = %q for an unsynced answer", got)
			}
		})
	}
}

func TestCheckSyncedFakesVerifyCredentials(t *testing.T) {
	sks, addrs := fakes(t, 3, "0/100")
	if _, ok, err := CheckSynced(context.Background(), addrs, tenant, timeline, "bad", nil); err != nil || ok {
		t.Fatalf("wrong token: synced=%v err=%v", ok, err)
	}
	if _, ok, err := CheckSynced(context.Background(), addrs, tenant, strings.Repeat("0", 32), token, nil); err != nil || ok {
		t.Fatalf("wrong timeline: synced=%v err=%v", ok, err)
	}
	auth, opts := 0, 0
	for _, sk := range sks {
		auth += sk.AuthFailures()
		opts += sk.OptionFailures()
		if sk.Queries() != 0 {
			t.Errorf("safekeeper %s answered a query despite a rejected connection", sk.Addr)
		}
	}
	// Each call stops once a quorum can no longer be reached: at least two rejections.
	if auth < 2 || opts < 2 {
		t.Fatalf("auth failures %d, option failures %d; want at least 2 each", auth, opts)
	}
	if got, ok, err := CheckSynced(context.Background(), addrs, tenant, timeline, token, nil); err != nil || !ok || got != "0/100" {
		t.Fatalf("right credentials: lsn=%q synced=%v err=%v", got, ok, err)
	}
}

func TestCheckSyncedCancelled(t *testing.T) {
	_, addrs := fakes(t, 3, "0/100")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok, err := CheckSynced(ctx, addrs, tenant, timeline, token, nil); err == nil || ok {
		t.Fatalf("cancelled: synced=%v err=%v, want an error", ok, err)
	}
}

func TestCheckSyncedNoSafekeepers(t *testing.T) {
	if _, ok, err := CheckSynced(context.Background(), nil, tenant, timeline, token, nil); err != nil || ok {
		t.Fatalf("synced=%v err=%v", ok, err)
	}
}

func TestSync(t *testing.T) {
	dir := t.TempDir()
	pgdata := filepath.Join(dir, "pgdata")
	shim := sktest.WriteSyncShim(t, dir, "0/16B9188", "")

	tests := []struct {
		name    string
		lsn     string
		fail    string
		token   string
		want    string
		wantErr []string // substrings of the error
	}{
		{name: "ok with token", lsn: "0/16B9188", token: token, want: "0/16B9188"},
		{name: "ok without token", lsn: "1/abc", want: "1/ABC"},
		{name: "failure quotes stdout", lsn: "0/1", fail: "could not reach safekeepers: " + token, token: token,
			wantErr: []string{"could not reach safekeepers: <redacted>", "failing as asked"}},
		{name: "garbage stdout", lsn: "this is not an lsn", wantErr: []string{"bad output", "this is not an lsn"}},
		{name: "empty stdout", lsn: "", wantErr: []string{"bad output"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sktest.SetShimLSN(t, shim, tc.lsn)
			sktest.SetShimFail(t, shim, tc.fail)
			before := sktest.ShimSyncCalls(t, shim)
			got, err := Sync(context.Background(), shim, pgdata, tc.token, 0, nil)
			if calls := sktest.ShimSyncCalls(t, shim); calls != before+1 {
				t.Fatalf("shim ran %d times, want 1", calls-before)
			}
			env := sktest.ShimEnv(t, shim)
			if env["ARGS"] != "--sync-safekeepers" {
				t.Errorf("args = %q, want only --sync-safekeepers (no -D)", env["ARGS"])
			}
			if env["PGDATA"] != pgdata {
				t.Errorf("PGDATA = %q, want %q", env["PGDATA"], pgdata)
			}
			tok, set := env["NEON_AUTH_TOKEN"]
			if tc.token != "" && tok != tc.token {
				t.Errorf("NEON_AUTH_TOKEN = %q, want the token", tok)
			}
			if tc.token == "" && set {
				t.Errorf("NEON_AUTH_TOKEN set (%q) without a token", tok)
			}
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Sync = %q, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if tc.token != "" && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error leaks the token: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if got != tc.want {
				t.Fatalf("lsn = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSyncMissingBinary(t *testing.T) {
	_, err := Sync(context.Background(), filepath.Join(t.TempDir(), "no-such-postgres"), t.TempDir(), "", 0, nil)
	if err == nil {
		t.Fatal("want an error for a missing binary")
	}
}

// A --sync-safekeepers that never finishes (safekeepers down: the walproposer retries
// forever) is killed at the timeout, and the error says so; a cancelled context is not
// reported as that timeout.
func TestSyncTimeout(t *testing.T) {
	dir := t.TempDir()
	shim := sktest.WriteSyncShim(t, dir, "0/16B9188", "")
	sktest.SetShimHang(t, shim, true)
	_, err := Sync(context.Background(), shim, filepath.Join(dir, "pgdata"), token, 300*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") || strings.Contains(err.Error(), token) {
		t.Fatalf("error %v, want the timeout named (and no token)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for sktest.ShimSyncCalls(t, shim) < 2 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_, err = Sync(ctx, shim, filepath.Join(dir, "pgdata"), token, time.Hour, nil)
	if err == nil || strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("cancelled: error %v, want a plain failure", err)
	}
	sktest.SetShimHang(t, shim, false)
	if lsn, err := Sync(context.Background(), shim, filepath.Join(dir, "pgdata"), token, 10*time.Second, nil); err != nil || lsn != "0/16B9188" {
		t.Fatalf("after the hang ended: %q %v", lsn, err)
	}
}

func TestShimExecsRealPostgres(t *testing.T) {
	real := sktest.DefaultRealPostgres
	if _, err := os.Stat(real); err != nil {
		t.Skipf("PostgreSQL 15 not installed at %s", real)
	}
	shim := sktest.WriteSyncShim(t, t.TempDir(), "0/1", "")
	res, err := runForTest(shim, "--version")
	if err != nil {
		t.Fatalf("shim --version: %v", err)
	}
	if !strings.Contains(res, "PostgreSQL") || !strings.Contains(res, "15") {
		t.Fatalf("shim --version printed %q, want the real postgres version", res)
	}
	if sktest.ShimSyncCalls(t, shim) != 0 {
		t.Fatal("a non-sync invocation was counted as a sync")
	}
}

func runForTest(path string, args ...string) (string, error) {
	res, err := execx.Run(context.Background(), execx.Cmd{Path: path, Args: args})
	return string(res.Stdout), err
}

func TestSyncBackoff(t *testing.T) {
	want := []time.Duration{0, 1100 * time.Millisecond, 1210 * time.Millisecond, 1331 * time.Millisecond,
		1464100 * time.Microsecond, 1610510 * time.Microsecond}
	for n, w := range want {
		if got := SyncBackoff(n).Round(time.Microsecond); got != w {
			t.Errorf("SyncBackoff(%d) = %v, want %v", n, got, w)
		}
	}
	if got := SyncBackoff(100); got != 3*time.Second {
		t.Errorf("SyncBackoff(100) = %v, want the 3 s cap", got)
	}
}

// Transient failures are retried with compute_ctl main's pauses until one run works; a
// run that keeps failing gives up after SyncRetries more runs; a timeout is not retried.
func TestSyncWithRetries(t *testing.T) {
	dir := t.TempDir()
	shim := sktest.WriteSyncShim(t, dir, "0/16B9188", "")
	var slept []time.Duration
	opts := SyncOptions{PGBin: shim, PGData: filepath.Join(dir, "pgdata"), Token: token,
		Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }}

	sktest.SetShimFailTimes(t, shim, 2)
	lsn, err := SyncWithRetries(context.Background(), opts)
	if err != nil || lsn != "0/16B9188" {
		t.Fatalf("after 2 transient failures: %q %v", lsn, err)
	}
	if calls := sktest.ShimSyncCalls(t, shim); calls != 3 {
		t.Fatalf("runs = %d, want 3", calls)
	}
	if len(slept) != 2 || slept[0] != SyncBackoff(0) || slept[1] != SyncBackoff(1) {
		t.Fatalf("pauses %v", slept)
	}

	slept = nil
	sktest.SetShimFail(t, shim, "no quorum")
	_, err = SyncWithRetries(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "after 5 retries") || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("persistent failure: %v", err)
	}
	if calls := sktest.ShimSyncCalls(t, shim); calls != 3+1+SyncRetries {
		t.Fatalf("runs = %d, want %d", calls, 3+1+SyncRetries)
	}
	if len(slept) != SyncRetries {
		t.Fatalf("pauses %v, want %d", slept, SyncRetries)
	}
	sktest.SetShimFail(t, shim, "")

	before := sktest.ShimSyncCalls(t, shim)
	sktest.SetShimHang(t, shim, true)
	opts.Timeout = 200 * time.Millisecond
	_, err = SyncWithRetries(context.Background(), opts)
	if !errors.Is(err, ErrSyncTimeout) {
		t.Fatalf("hang: %v, want the timeout", err)
	}
	if calls := sktest.ShimSyncCalls(t, shim); calls != before+1 {
		t.Fatalf("a timed out run was retried: %d runs", calls-before)
	}
	sktest.SetShimHang(t, shim, false)

	if _, err := SyncWithRetries(context.Background(), SyncOptions{PGBin: filepath.Join(dir, "nope"), PGData: dir,
		Sleep: opts.Sleep}); err == nil || strings.Contains(err.Error(), "retries") {
		t.Fatalf("missing binary: %v, want one failure without retries", err)
	}
}
