package compute

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/computetools/compute-tools/internal/pgtest"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
)

// recordingVM records the helpers' calls and fails those named in fail.
type recordingVM struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
}

func (v *recordingVM) record(call, kind string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, call)
	return v.fail[kind]
}

func (v *recordingVM) ResizeSwap(_ context.Context, n uint64) error {
	return v.record("swap "+itoa(n), "swap")
}

func (v *recordingVM) SetDiskQuota(_ context.Context, n uint64, mp string) error {
	return v.record("quota "+itoa(n)+" "+mp, "quota")
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// vmSpec is a standalone config with swap_size_bytes and disk_quota_bytes.
const vmSpec = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "swap_size_bytes": 1073741824, "disk_quota_bytes": 10737418240, "cluster": {"roles": [], "databases": []}}}`

// TestPrepareRunsVMHelpers runs a standalone prepare against a real (halted) PostgreSQL
// 15 cluster: the swap and disk quota helpers run as the flags and the spec ask, and a
// helper that fails fails the start (as in compute_ctl), PGDATA prepared or not.
func TestPrepareRunsVMHelpers(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	pg := pgtest.Start(t)
	pg.Halt(t)
	for _, tc := range []struct {
		name      string
		swap      bool
		fs        string
		fail      map[string]error
		wantCalls []string
		wantErr   string
	}{
		{name: "flags off", wantCalls: nil},
		{name: "both", swap: true, fs: "/var/db", wantCalls: []string{"quota 10737418240 /var/db", "swap 1073741824"}},
		{name: "swap fails", swap: true, fs: "/var/db", fail: map[string]error{"swap": errors.New("resize swap to 1073741824 bytes: exit status 1")},
			wantCalls: []string{"quota 10737418240 /var/db", "swap 1073741824"}, wantErr: "resize swap to 1073741824 bytes: exit status 1"},
		{name: "quota only, fails", fs: "/", fail: map[string]error{"quota": errors.New("set disk quota: no")},
			wantCalls: []string{"quota 10737418240 /"}, wantErr: "set disk quota: no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := state.Open(filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			vm := &recordingVM{fail: tc.fail}
			cfg := Settings{StateDir: st.Dir(), ConfigFile: writeFile(t, vmSpec), PGData: pg.DataDir,
				PGBin: filepath.Join(pg.BinDir, "postgres"), Connstr: pg.Connstr(), PrivilegedRole: "neon_superuser",
				ResizeSwapOnBind: tc.swap, DiskQuotaFS: tc.fs}
			err = Prepare(context.Background(), cfg, &Deps{Store: st, VM: vm, Log: quietLog()})
			vm.mu.Lock()
			calls := append([]string(nil), vm.calls...)
			vm.mu.Unlock()
			// The two run at once: compare as sets.
			if strings.Join(sortedCopy(calls), "|") != strings.Join(sortedCopy(tc.wantCalls), "|") {
				t.Errorf("helper calls %q, want %q", calls, tc.wantCalls)
			}
			rec, _ := st.Load()
			if tc.wantErr == "" {
				if err != nil || rec.Status != state.Init {
					t.Fatalf("Prepare = %v, status %s", err, rec.Status)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Prepare = %v, want %q", err, tc.wantErr)
			}
			if rec.Status != state.Failed || !strings.Contains(deref(rec.Error), tc.wantErr) {
				t.Errorf("record %s %q", rec.Status, deref(rec.Error))
			}
		})
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// Without a way to run the helpers, a compute that asks for them fails rather than
// starting without its swap or quota.
func TestVMHelpersMissing(t *testing.T) {
	n := uint64(1 << 20)
	d := &Deps{Log: quietLog()}
	done := startVMHelpers(context.Background(), Settings{ResizeSwapOnBind: true}, &spec.ComputeSpec{SwapSizeBytes: &n}, d)
	if err := done(); err == nil {
		t.Error("no VMHelpers: nil, want an error")
	}
}
