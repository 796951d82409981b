package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
)

// allowed is the transition table written out independently of the code's table
// (compute_ctl's ComputeStatus moves, compute_tools/src/compute.rs, plus the fixes in
// docs/architecture.md). Self-transitions are listed separately below.
var allowed = map[[2]Status]bool{
	{Empty, ConfigurationPending}:        true,
	{Empty, Init}:                        true,
	{Empty, TerminationPendingFast}:      true,
	{Empty, TerminationPendingImmediate}: true,
	{Empty, Failed}:                      true,

	{ConfigurationPending, Init}:          true,
	{ConfigurationPending, Configuration}: true,
	{ConfigurationPending, Failed}:        true,

	{Init, Running}: true,
	{Init, Failed}:  true,

	{Running, ConfigurationPending}:        true,
	{Running, TerminationPendingFast}:      true,
	{Running, TerminationPendingImmediate}: true,
	{Running, Failed}:                      true,

	{Configuration, Running}: true,
	{Configuration, Failed}:  true,

	{TerminationPendingFast, Terminated}:      true,
	{TerminationPendingFast, Failed}:          true,
	{TerminationPendingImmediate, Terminated}: true,
	{TerminationPendingImmediate, Failed}:     true,

	// Our fix: a new /configure while Postgres still runs recovers a failed compute.
	{Failed, ConfigurationPending}: true,

	// Neon main's refresh (POST /refresh_configuration), with our fixes: terminable while
	// pending, failed when Postgres dies or the compute is no longer attached.
	{Running, RefreshConfigurationPending}:                     true,
	{Failed, RefreshConfigurationPending}:                      true,
	{RefreshConfigurationPending, RefreshConfiguration}:        true,
	{RefreshConfigurationPending, TerminationPendingFast}:      true,
	{RefreshConfigurationPending, TerminationPendingImmediate}: true,
	{RefreshConfigurationPending, Failed}:                      true,
	{RefreshConfigurationPending, ConfigurationPending}:        true, // a pushed /configure
	{RefreshConfiguration, Running}:                            true,
	{RefreshConfiguration, RefreshConfigurationPending}:        true,
	{RefreshConfiguration, Failed}:                             true,
}

func TestCanTransitionExhaustive(t *testing.T) {
	if len(All) != 11 {
		t.Fatalf("All has %d statuses, want Neon main's 11", len(All))
	}
	for _, from := range All {
		for _, to := range All {
			want := from == to || allowed[[2]Status{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	// Unknown statuses never transition, not even to themselves.
	for _, s := range All {
		if CanTransition("bogus", s) || CanTransition(s, "bogus") {
			t.Errorf("transition between bogus and %s allowed", s)
		}
	}
	if CanTransition("bogus", "bogus") || CanTransition("", "") {
		t.Error("self-transition of an unknown status allowed")
	}
}

func TestStatusSpellings(t *testing.T) {
	tests := []struct {
		s             Status
		json, display string
		pending       bool
	}{
		{Empty, `"empty"`, "empty", false},
		{ConfigurationPending, `"configuration_pending"`, "configuration-pending", false},
		{Init, `"init"`, "init", false},
		{Running, `"running"`, "running", false},
		{Configuration, `"configuration"`, "configuration", false},
		{Failed, `"failed"`, "failed", false},
		{TerminationPendingFast, `"termination_pending_fast"`, "termination-pending-fast", true},
		{TerminationPendingImmediate, `"termination_pending_immediate"`, "termination-pending-immediate", true},
		{Terminated, `"terminated"`, "terminated", false},
		{RefreshConfigurationPending, `"refresh_configuration_pending"`, "refresh-configuration-pending", false},
		{RefreshConfiguration, `"refresh_configuration"`, "refresh-configuration", false},
	}
	if len(tests) != len(All) {
		t.Fatalf("test covers %d statuses, All has %d", len(tests), len(All))
	}
	for i, tc := range tests {
		if All[i] != tc.s {
			t.Errorf("All[%d] = %s, want %s (Neon's order)", i, All[i], tc.s)
		}
		b, err := json.Marshal(tc.s)
		if err != nil || string(b) != tc.json {
			t.Errorf("marshal %s = %s, %v; want %s", tc.s, b, err, tc.json)
		}
		// Inside a record the status is still a flat string.
		rb, _ := json.Marshal(Record{Status: tc.s})
		if !bytes.Contains(rb, []byte(`"status":`+tc.json)) {
			t.Errorf("record JSON %s lacks flat status %s", rb, tc.json)
		}
		if d := tc.s.Display(); d != tc.display {
			t.Errorf("Display(%s) = %s, want %s", tc.s, d, tc.display)
		}
		if tc.s.TerminationPending() != tc.pending || !tc.s.Valid() {
			t.Errorf("%s: TerminationPending %v Valid %v", tc.s, tc.s.TerminationPending(), tc.s.Valid())
		}
	}
	if Status("Running").Valid() || Status("").Valid() {
		t.Error("a misspelled status is valid")
	}
	if msg := (&WrongStatusError{Status: TerminationPendingFast}).Error(); msg != "invalid compute status: termination-pending-fast" {
		t.Errorf("WrongStatusError = %q", msg)
	}
}

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreRoundTrip(t *testing.T) {
	s := open(t)
	if _, err := s.Load(); !errors.Is(err, ErrNoState) {
		t.Fatalf("Load of a fresh store = %v, want ErrNoState", err)
	}
	var changes []Record
	s.OnChange = func(r Record) { changes = append(changes, r) }

	r, err := s.Update(func(r *Record) error {
		tenant := "0123456789abcdef0123456789abcdef"
		r.Tenant = &tenant
		r.Metrics.BasebackupMs = 12
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Empty || r.Seq != 1 || r.StartTime.IsZero() || r.UpdatedAt.IsZero() {
		t.Fatalf("first record = %+v", r)
	}
	r, err = s.transition(Init, func(r *Record) { r.Mode = "primary"; r.Storage = "standalone" })
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Init || r.Seq != 2 || r.Mode != "primary" {
		t.Fatalf("after Init: %+v", r)
	}
	r, err = s.transition(Running, nil)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Status != Running || loaded.Seq != 3 || *loaded.Tenant != "0123456789abcdef0123456789abcdef" ||
		loaded.Metrics.BasebackupMs != 12 || loaded.Storage != "standalone" || !loaded.StartTime.Equal(r.StartTime) {
		t.Fatalf("loaded = %+v", loaded)
	}

	// An error from fn leaves the record alone.
	boom := errors.New("boom")
	if _, err := s.Update(func(r *Record) error { r.Mode = "x"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("Update error = %v, want boom", err)
	}
	if again, _ := s.Load(); again.Seq != 3 || again.Mode != "primary" {
		t.Fatalf("failed Update changed the record: %+v", again)
	}

	// Errors set and clear.
	if r, err = s.Update(func(r *Record) error { r.SetError("disk on fire"); return nil }); err != nil || r.Error == nil || *r.Error != "disk on fire" {
		t.Fatalf("SetError: %+v, %v", r, err)
	}
	if r, err = s.Update(func(r *Record) error { r.SetError(""); return nil }); err != nil || r.Error != nil {
		t.Fatalf("SetError(\"\"): %+v, %v", r, err)
	}

	// Reset starts over but keeps counting.
	r, err = s.reset()
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Empty || r.Seq != 6 || r.Tenant != nil || r.Mode != "" {
		t.Fatalf("after Reset: %+v", r)
	}
	if len(changes) != 6 || changes[5].Seq != 6 || changes[1].Status != Init {
		t.Fatalf("OnChange saw %d changes: %+v", len(changes), changes)
	}
}

func TestIllegalTransitionLeavesRecord(t *testing.T) {
	for _, from := range All {
		for _, to := range All {
			if from == to || allowed[[2]Status{from, to}] {
				continue
			}
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				s := open(t)
				// Write a record in status from directly: the table does not allow
				// reaching every status from empty in one step.
				if _, err := s.Update(func(r *Record) error { return nil }); err != nil {
					t.Fatal(err)
				}
				if err := s.write(&Record{Status: from, StartTime: time.Now().UTC()}, 1); err != nil {
					t.Fatal(err)
				}
				before, err := os.ReadFile(s.Path())
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.transition(to, func(r *Record) { r.Mode = "changed" })
				var te *TransitionError
				if !errors.As(err, &te) || te.From != from || te.To != to {
					t.Fatalf("Transition error = %v, want TransitionError %s->%s", err, from, to)
				}
				if !strings.Contains(err.Error(), string(from)) || !strings.Contains(err.Error(), string(to)) {
					t.Errorf("message %q does not name both states", err)
				}
				// The same through Update changing Status directly.
				_, err = s.Update(func(r *Record) error { r.Status = to; return nil })
				if !errors.As(err, &te) || te.From != from || te.To != to {
					t.Fatalf("Update error = %v, want TransitionError", err)
				}
				after, err := os.ReadFile(s.Path())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(before, after) {
					t.Errorf("record changed on disk:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s := open(t)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Update(func(r *Record) error {
				r.Metrics.NumExtDownloaded++
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if r.Metrics.NumExtDownloaded != n || r.Seq != n {
		t.Fatalf("after %d concurrent increments: counter %d, seq %d", n, r.Metrics.NumExtDownloaded, r.Seq)
	}
}

func TestLoadCorruptFile(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"truncated", `{"status": "runn`, "parse "},
		{"not json", "garbage", "parse "},
		{"unknown status", `{"status": "Running"}`, `unknown status "Running"`},
		{"status with data", `{"status": {"Running": 1}}`, "parse "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if err := os.WriteFile(s.Path(), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := s.Load()
			if err == nil || errors.Is(err, ErrNoState) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("Load error = %v, want one containing %q and the path", err, tc.want)
			}
			// Writers refuse to build on a record they cannot read.
			if _, err := s.Update(func(*Record) error { return nil }); err == nil {
				t.Fatal("Update over a corrupt record succeeded")
			}
			if b, _ := os.ReadFile(s.Path()); string(b) != tc.content {
				t.Fatal("Update overwrote the corrupt record")
			}
			// Reset starts over.
			if r, err := s.reset(); err != nil || r.Status != Empty || r.Seq != 1 {
				t.Fatalf("Reset over a corrupt record: %+v, %v", r, err)
			}
		})
	}
}

func TestWaitWakesOnTransition(t *testing.T) {
	s := open(t)
	if _, err := s.transition(Init, nil); err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{})
	go func() {
		if _, err := s.transition(Running, nil); err != nil {
			t.Error(err)
		}
		wake <- struct{}{} // as a D-Bus status signal would
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The recheck interval is far longer than the test: only the wake can end the wait.
	r, err := s.Wait(ctx, wake, time.Hour, func(r Record) bool { return r.Status == Running })
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Running {
		t.Fatalf("Wait returned %s", r.Status)
	}
}

func TestWaitWithoutRecordYet(t *testing.T) {
	s := open(t)
	wake := make(chan struct{})
	go func() {
		s.transition(ConfigurationPending, nil)
		wake <- struct{}{}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.Wait(ctx, wake, time.Hour, func(r Record) bool { return r.Status == ConfigurationPending })
	if err != nil || r.Status != ConfigurationPending {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
}

func TestWaitHonoursCancel(t *testing.T) {
	s := open(t)
	if _, err := s.reset(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Wait(ctx, nil, time.Hour, func(Record) bool { return false })
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait error = %v, want context.Canceled", err)
	}
}

// TestFileModesAndOwnership: state.json and state.lock are 0644; in the production layout
// (directory root:postgres, mode 2770, see packaging/tmpfiles) state.json written by root
// is in group postgres, so units running as postgres can read and replace it.
func TestFileModesAndOwnership(t *testing.T) {
	s := open(t)
	if _, err := s.reset(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{StateFile, LockFile} {
		fi, err := os.Stat(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", name, fi.Mode().Perm())
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("ownership part needs root")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres user: %v", err)
	}
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(s.Dir(), 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Dir(), 0o770|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if _, err := s.transition(Init, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Gid) != gid {
		t.Errorf("state.json in group %d, want the directory's group %d", st.Gid, gid)
	}
}

const helperEnv = "STATE_TEST_HELPER_DIR"

// TestHelperUpdate is not a test: TestUpdateAsNonRoot runs the test binary as postgres
// with this one selected to update a record that root wrote.
func TestHelperUpdate(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestUpdateAsNonRoot")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.transition(Running, func(r *Record) { r.Metrics.ConfigMs = 42 })
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("helper-seq=%d uid=%d\n", r.Seq, os.Geteuid())
}

// TestUpdateAsNonRoot: a record written by root (compute-init) is updated by a unit
// running as postgres, through the store's lock, in another process.
func TestUpdateAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as the postgres user")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres user: %v", err)
	}
	gid, _ := strconv.Atoi(u.Gid)

	// A directory postgres can reach (t.TempDir's parents are private to root).
	base, err := os.MkdirTemp("", "state-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a private go-build directory: copy it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "state.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(base, "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The production layout: root:postgres, 2770.
	if err := os.Chown(dir, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if _, err := s.transition(Init, nil); err != nil { // written by root, lock file created by root
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{
		Path: bin,
		Args: []string{"-test.run=^TestHelperUpdate$", "-test.v"},
		Env:  []string{helperEnv + "=" + dir},
		User: "postgres",
	})
	if err != nil {
		t.Fatalf("helper as postgres: %v\n%s", err, res.Stdout)
	}
	if !strings.Contains(string(res.Stdout), "helper-seq=2 uid="+u.Uid) {
		t.Fatalf("helper output:\n%s", res.Stdout)
	}
	r, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Running || r.Seq != 2 || r.Metrics.ConfigMs != 42 {
		t.Fatalf("record after the postgres update: %+v", r)
	}
	// And root can still update what postgres wrote.
	if _, err := s.transition(TerminationPendingFast, nil); err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func TestResetUnless(t *testing.T) {
	s := open(t)
	keepPending := func(r Record) bool { return r.Status == ConfigurationPending }
	if _, err := s.transition(ConfigurationPending, nil); err != nil {
		t.Fatal(err)
	}
	cleaned := false
	r, reset, err := s.resetUnless(keepPending, func() error { cleaned = true; return nil })
	if err != nil || reset || cleaned || r.Status != ConfigurationPending {
		t.Fatalf("kept record: %+v reset=%v cleaned=%v err=%v", r, reset, cleaned, err)
	}
	if _, err := s.transition(Init, nil); err != nil {
		t.Fatal(err)
	}
	r, reset, err = s.resetUnless(keepPending, func() error { cleaned = true; return nil })
	if err != nil || !reset || !cleaned || r.Status != Empty {
		t.Fatalf("reset record: %+v reset=%v cleaned=%v err=%v", r, reset, cleaned, err)
	}
	// A failing cleanup leaves the record as it was.
	if _, err := s.transition(Init, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.resetUnless(nil, func() error { return errors.New("boom") }); err == nil {
		t.Fatal("cleanup error not returned")
	}
	if cur, _ := s.Load(); cur.Status != Init {
		t.Fatalf("status %s after a failed cleanup, want init", cur.Status)
	}
}

// Announce emits every write with its status and seq; a failed emit is logged and the
// write still succeeds.
func TestAnnounce(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	s.Log = slog.New(slog.NewTextHandler(&logged, nil))
	var got []string
	fail := false
	s.Announce(func(status string, seq uint64) error {
		got = append(got, fmt.Sprintf("%s/%d", status, seq))
		if fail {
			return errors.New("bus gone")
		}
		return nil
	})
	if _, err := s.Update(func(r *Record) error { r.MigrationID = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	fail = true
	if _, err := s.Update(func(r *Record) error { r.MigrationID = 2; return nil }); err != nil {
		t.Fatalf("a failed announcement failed the write: %v", err)
	}
	if strings.Join(got, ",") != "empty/1,empty/2" {
		t.Errorf("announced %v", got)
	}
	if !strings.Contains(logged.String(), "announce status") || !strings.Contains(logged.String(), "bus gone") {
		t.Errorf("log %q", logged.String())
	}
}
