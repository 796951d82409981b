package neonvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/paths"
)

// fakeHelper writes a helper script that appends its arguments to a file and exits with
// code; it returns the script's path and a function that reads the calls so far.
func fakeHelper(t *testing.T, name string, code int) (string, func() []string) {
	t.Helper()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	bin := filepath.Join(dir, name)
	script := "#!/bin/sh\necho \"$*\" >>" + calls + "\n"
	if code != 0 {
		script += "echo \"" + name + ": cannot do it\" >&2\n"
	}
	script += "exit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, func() []string {
		b, err := os.ReadFile(calls)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func logger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func TestDirect(t *testing.T) {
	swap, swapCalls := fakeHelper(t, "resize-swap", 0)
	quota, quotaCalls := fakeHelper(t, "set-disk-quota", 0)
	log, buf := logger()
	h := Helpers{ResizeSwapBin: swap, SetDiskQuotaBin: quota, Log: log}
	ctx := context.Background()
	if err := h.ResizeSwap(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := h.SetDiskQuota(ctx, 10<<30+1023, "/var/db"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetDiskQuota(ctx, 0, "/var/db"); err != nil {
		t.Fatal(err)
	}
	if got, want := swapCalls(), []string{"--once 1073741824"}; !equal(got, want) {
		t.Errorf("resize-swap calls %q, want %q", got, want)
	}
	// bytes/1024, rounded down as compute_ctl does; 0 lifts the quota.
	if got, want := quotaCalls(), []string{"10485760 /var/db", "0 /var/db"}; !equal(got, want) {
		t.Errorf("set-disk-quota calls %q, want %q", got, want)
	}
	for _, want := range []string{`msg="resized swap" swap_size_bytes=1073741824 size_mib=1024`, `msg="set disk quota"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf)
		}
	}
}

func TestHelperFails(t *testing.T) {
	swap, _ := fakeHelper(t, "resize-swap", 3)
	quota, _ := fakeHelper(t, "set-disk-quota", 1)
	log, _ := logger()
	h := Helpers{ResizeSwapBin: swap, SetDiskQuotaBin: quota, Log: log}
	err := h.ResizeSwap(context.Background(), 4096)
	if err == nil || !strings.Contains(err.Error(), "resize swap to 4096 bytes") || !strings.Contains(err.Error(), "resize-swap: cannot do it") {
		t.Errorf("ResizeSwap = %v, want the helper's failure with its stderr", err)
	}
	err = h.SetDiskQuota(context.Background(), 4096, "/")
	if err == nil || !strings.Contains(err.Error(), "set disk quota of / to 4 KiB") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("SetDiskQuota = %v, want the helper's failure", err)
	}
	if err := h.SetDiskQuota(context.Background(), 4096, ""); err == nil {
		t.Error("SetDiskQuota without a mountpoint = nil, want an error")
	}
}

// startFunc is a UnitStarter.
type startFunc func(ctx context.Context, name string) error

func (f startFunc) StartUnit(ctx context.Context, name string) error { return f(ctx, name) }

func TestMissingHelperIsSkipped(t *testing.T) {
	dir := t.TempDir()
	log, buf := logger()
	started := 0
	units := startFunc(func(context.Context, string) error { started++; return nil })
	for _, u := range []UnitStarter{nil, units} {
		h := Helpers{ResizeSwapBin: filepath.Join(dir, "resize-swap"), SetDiskQuotaBin: filepath.Join(dir, "set-disk-quota"),
			Units: u, ResizeSwapUnit: paths.ResizeSwapUnit, DiskQuotaUnit: paths.DiskQuotaUnit, UnitMountpoint: "/", Log: log}
		if err := h.ResizeSwap(context.Background(), 1<<20); err != nil {
			t.Errorf("ResizeSwap without the helper = %v, want nil", err)
		}
		if err := h.SetDiskQuota(context.Background(), 1<<20, "/"); err != nil {
			t.Errorf("SetDiskQuota without the helper = %v, want nil", err)
		}
	}
	if started != 0 {
		t.Errorf("%d units started without a helper", started)
	}
	for _, want := range []string{"swap not resized: the NeonVM helper is not installed", "disk quota not set: the NeonVM helper is not installed"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf)
		}
	}
}

// unitExecStart returns the ExecStart= line of one of our unit files, as systemd runs it
// for instance: %i replaced, $$ unescaped, the helper's path replaced by bin.
func unitExecStart(t *testing.T, unit, instance, helper, bin string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "units", unit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "ExecStart=")
		if !ok {
			continue
		}
		v = strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(v, "%i", instance), "$$", "$"), helper, bin)
		if sh, ok := strings.CutPrefix(v, "/bin/sh -c '"); ok {
			i := strings.LastIndex(sh, "'")
			return append([]string{"/bin/sh", "-c", sh[:i]}, strings.Fields(sh[i+1:])...)
		}
		return strings.Fields(v)
	}
	t.Fatalf("%s has no ExecStart=", unit)
	return nil
}

// TestThroughUnits runs the helpers as compute-init does when it is not root: through a
// unit start. The starter here runs the unit file's own ExecStart= (with the fake helper)
// in the unit's environment, as systemd would, and answers as a start job does.
func TestThroughUnits(t *testing.T) {
	swap, swapCalls := fakeHelper(t, "resize-swap", 0)
	quota, quotaCalls := fakeHelper(t, "set-disk-quota", 0)
	var started []string
	envFS := "/var/db"
	units := startFunc(func(ctx context.Context, name string) error {
		started = append(started, name)
		tmpl, inst, _ := strings.Cut(strings.TrimSuffix(name, ".service"), "@")
		var argv []string
		switch tmpl {
		case "compute-resize-swap":
			argv = unitExecStart(t, "compute-resize-swap@.service", inst, paths.ResizeSwapBin, swap)
		case "compute-disk-quota":
			argv = unitExecStart(t, "compute-disk-quota@.service", inst, paths.SetDiskQuotaBin, quota)
		default:
			return errors.New("Unit " + name + " not found.")
		}
		if _, err := execx.Run(ctx, execx.Cmd{Path: argv[0], Args: argv[1:], Env: []string{paths.EnvDiskQuotaFS + "=" + envFS}}); err != nil {
			return errors.New("start " + name + `: job result "failed"`)
		}
		return nil
	})
	log, _ := logger()
	h := Helpers{ResizeSwapBin: swap, SetDiskQuotaBin: quota, Units: units,
		ResizeSwapUnit: paths.ResizeSwapUnit, DiskQuotaUnit: paths.DiskQuotaUnit, UnitMountpoint: envFS, Log: log}
	ctx := context.Background()
	if err := h.ResizeSwap(ctx, 2<<30); err != nil {
		t.Fatal(err)
	}
	if err := h.SetDiskQuota(ctx, 5<<20, "/var/db"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"compute-resize-swap@2147483648.service", "compute-disk-quota@5120.service"}; !equal(started, want) {
		t.Errorf("units started %q, want %q", started, want)
	}
	if got, want := swapCalls(), []string{"--once 2147483648"}; !equal(got, want) {
		t.Errorf("resize-swap calls %q, want %q", got, want)
	}
	if got, want := quotaCalls(), []string{"5120 /var/db"}; !equal(got, want) {
		t.Errorf("set-disk-quota calls %q, want %q", got, want)
	}

	// The unit takes the mountpoint from the settings file: a flag that disagrees is an
	// error, and nothing runs.
	err := h.SetDiskQuota(ctx, 5<<20, "/home")
	if err == nil || !strings.Contains(err.Error(), `takes "/var/db" from the settings file`) {
		t.Errorf("SetDiskQuota with another mountpoint = %v, want an error naming both", err)
	}
	// The unit refuses a settings file without the mountpoint, and a start that fails is
	// an error naming the unit's journal.
	envFS = ""
	err = h.SetDiskQuota(ctx, 0, "")
	if err == nil {
		t.Error("SetDiskQuota without a mountpoint = nil")
	}
	h.UnitMountpoint = "/x"
	err = h.SetDiskQuota(ctx, 0, "/x")
	if err == nil || !strings.Contains(err.Error(), `job result "failed" (journalctl -u compute-disk-quota@0.service)`) {
		t.Errorf("SetDiskQuota through a failing unit = %v", err)
	}
	if got := quotaCalls(); len(got) != 1 {
		t.Errorf("set-disk-quota ran again: %q", got)
	}
	// The unit's own check of its instance.
	argv := unitExecStart(t, "compute-disk-quota@.service", "12x", paths.SetDiskQuotaBin, quota)
	_, err = execx.Run(ctx, execx.Cmd{Path: argv[0], Args: argv[1:], Env: []string{paths.EnvDiskQuotaFS + "=/var/db"}})
	if err == nil || !strings.Contains(err.Error(), "instance 12x is not a size in KiB") {
		t.Errorf("unit with instance 12x: %v", err)
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "|") == strings.Join(b, "|") && len(a) == len(b)
}
