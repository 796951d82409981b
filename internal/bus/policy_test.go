package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/bus/bustest"
	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"
)

// helperEnv makes the test binary act as a bus client (see runHelper) instead of running
// tests; the policy test runs it as other users.
const helperEnv = "COMPUTE_BUS_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper does one bus operation as the current user.
func runHelper(mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	switch mode {
	case "claim":
		return c.ClaimName()
	case "claim-monitor":
		return c.ClaimMonitorName()
	case "offload":
		return c.LFCOffload(ctx)
	case "emit":
		return c.EmitStatusChanged("from-"+os.Getenv("USER_NAME"), 5)
	case "getstatus":
		s, err := c.GetStatus(ctx)
		if err != nil {
			return err
		}
		fmt.Print(s)
		return nil
	case "receive":
		ch, stop, err := c.SubscribeStatus()
		if err != nil {
			return err
		}
		defer stop()
		for {
			select {
			case s := <-ch:
				if s.Status == "ping" {
					return nil
				}
			case <-ctx.Done():
				return errors.New("no ping received")
			}
		}
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

const policyFile = "../../packaging/dbus/org.computetools.Compute1.conf"

func runAs(ctx context.Context, bin, addr, who, mode string) (string, error) {
	res, err := execx.Run(ctx, execx.Cmd{
		Path: bin,
		User: who,
		Env:  []string{helperEnv + "=" + mode, AddressEnv + "=" + addr, "USER_NAME=" + who},
	})
	return string(res.Stdout), err
}

// TestPolicyFileWithoutIt checks that the system-like bus really enforces the system
// policy: without our file, even root may not own the name.
func TestPolicyFileWithoutIt(t *testing.T) {
	t.Setenv(AddressEnv, bustest.StartSystemLike(t, t.TempDir()))
	c := connect(t)
	err := c.ClaimName()
	if err == nil {
		t.Fatal("root owned the name without the policy file")
	}
	if !strings.Contains(err.Error(), "policy file") || !strings.Contains(err.Error(), "not allowed to own") {
		t.Errorf("error = %v, want the bus denial and a hint at the policy file", err)
	}
}

func TestPolicyFileOnSystemLikeBus(t *testing.T) {
	include := t.TempDir()
	raw, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	// compute-api's user: where the package is not installed (a development machine), the
	// system user daemon stands in for it, in a copy of the file with its name.
	apiUser := "compute-api"
	if _, err := user.Lookup(apiUser); err != nil {
		apiUser = "daemon"
		raw = []byte(strings.ReplaceAll(string(raw), `user="compute-api"`, `user="daemon"`))
	}
	if err := os.WriteFile(filepath.Join(include, filepath.Base(policyFile)), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := bustest.StartSystemLike(t, include)
	t.Setenv(AddressEnv, addr)
	for _, u := range []string{"postgres", "nobody", apiUser} {
		if _, err := user.Lookup(u); err != nil {
			t.Skipf("user %s missing: %v", u, err)
		}
	}
	bin := execxtest.SelfForOthers(t)
	ctx := context.Background()

	// compute-api's user may own the name (the helper exits, releasing it); postgres
	// (which runs Postgres, and a superuser's COPY ... PROGRAM) and nobody may not.
	if out, err := runAs(ctx, bin, addr, apiUser, "claim"); err != nil {
		t.Errorf("%s claim: %v %s", apiUser, err, out)
	}
	for _, u := range []string{"postgres", "nobody"} {
		_, err = runAs(ctx, bin, addr, u, "claim")
		if err == nil || !strings.Contains(err.Error(), "not allowed to own") {
			t.Errorf("%s claim = %v, want a policy denial", u, err)
		}
	}

	// root owns it and serves GetStatus, which anyone may call.
	root := connect(t)
	if err := root.ServeStatus(func() string { return "running" }); err != nil {
		t.Fatal(err)
	}
	if err := root.ClaimName(); err != nil {
		t.Fatalf("root claim: %v", err)
	}
	for _, u := range []string{"nobody", "postgres"} {
		out, err := runAs(ctx, bin, addr, u, "getstatus")
		if err != nil || out != "running" {
			t.Errorf("GetStatus as %s = %q, %v; want running", u, out, err)
		}
	}

	// The monitor's name: postgres may own it, nobody may not.
	if out, err := runAs(ctx, bin, addr, "postgres", "claim-monitor"); err != nil {
		t.Errorf("postgres claim monitor: %v %s", err, out)
	}
	for _, u := range []string{"nobody", apiUser} {
		if _, err := runAs(ctx, bin, addr, u, "claim-monitor"); err == nil || !strings.Contains(err.Error(), "not allowed to own") {
			t.Errorf("%s claim monitor = %v, want a policy denial", u, err)
		}
	}
	// Its LFC methods start work: postgres may call them, nobody may not.
	mon := connect(t)
	offloads := &fakeLFC{}
	if err := mon.ServeLFC(offloads); err != nil {
		t.Fatal(err)
	}
	if err := mon.ClaimMonitorName(); err != nil {
		t.Fatalf("root claim monitor: %v", err)
	}
	for _, u := range []string{"postgres", apiUser} {
		if out, err := runAs(ctx, bin, addr, u, "offload"); err != nil {
			t.Errorf("Offload as %s: %v %s", u, err, out)
		}
	}
	if _, err := runAs(ctx, bin, addr, "nobody", "offload"); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Errorf("Offload as nobody = %v, want an access denial", err)
	}
	if n := offloads.offloads.Load(); n != 2 {
		t.Errorf("offloads taken = %d, want 2 (postgres's and %s's only)", n, apiUser)
	}

	// Any user may emit StatusChanged, and root hears it.
	status, cancel, err := root.SubscribeStatus()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for _, u := range []string{"postgres", "nobody"} {
		if out, err := runAs(ctx, bin, addr, u, "emit"); err != nil {
			t.Fatalf("emit as %s: %v %s", u, err, out)
		}
		if s := waitStatus(t, status); s.Status != "from-"+u || s.Seq != 5 {
			t.Errorf("signal from %s = %+v", u, s)
		}
	}

	// Any user may receive StatusChanged. The helper subscribes at a moment we cannot
	// see, so ping until it has heard one and exits.
	for _, u := range []string{"postgres", "nobody"} {
		done := make(chan error, 1)
		go func() {
			_, err := runAs(ctx, bin, addr, u, "receive")
			done <- err
		}()
		tick := time.NewTicker(20 * time.Millisecond)
	wait:
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("receive as %s: %v", u, err)
				}
				break wait
			case <-tick.C:
				if err := root.EmitStatusChanged("ping", 1); err != nil {
					t.Fatal(err)
				}
			}
		}
		tick.Stop()
	}
}
