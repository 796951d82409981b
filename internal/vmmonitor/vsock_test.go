package vmmonitor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"testing"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/execx/execxtest"

	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

// The same server and agent as over TCP, over vsock loopback (the local context ID).
// Kernels without vsock loopback (vsock_loopback) cannot bind to it: the test skips
// there, and runs where it exists.
func TestServeOverVsock(t *testing.T) {
	ln, err := listenVsockCID(vsock.Local, 0)
	if err != nil {
		t.Skipf("vsock loopback not available: %v", err)
	}
	port := ln.Addr().(*vsock.Addr).Port
	p := newFakePolicy(t)
	srv := New(Config{Policy: p, Logger: slogDiscard()})
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return vsock.DialContext(ctx, vsock.Local, port, nil)
		},
	}}
	a, err := agenttest.Dial(bg, "ws://vsock"+Path, agenttest.Options{HTTPClient: client})
	if err != nil {
		t.Fatalf("dial over vsock: %v", err)
	}
	defer a.Close()
	if err := a.HealthCheck(bg); err != nil {
		t.Fatalf("health check: %v", err)
	}
	if err := a.NotifyUpscale(bg, 2, 4<<30); err != nil {
		t.Fatalf("upscale: %v", err)
	}
	if ok, status, err := a.RequestDownscale(bg, 1, 2<<30); err != nil || !ok || status != "ok" {
		t.Fatalf("downscale: %v %q %v", ok, status, err)
	}
}

// ListenVsock binds any context ID of this machine; only a machine without vsock at all
// (no AF_VSOCK) skips.
func TestListenVsock(t *testing.T) {
	ln, err := ListenVsock(0)
	if err != nil {
		t.Skipf("vsock not available: %v", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*vsock.Addr)
	if !ok || addr.Port == 0 || addr.ContextID != unix.VMADDR_CID_ANY {
		t.Fatalf("listening on %v", ln.Addr())
	}
}

// listenAsEnv makes the test binary call ListenVsock and print "ok" or the error.
const listenAsEnv = "VMMONITOR_TEST_LISTEN_VSOCK"

func TestMain(m *testing.M) {
	if os.Getenv(listenAsEnv) != "" {
		ln, err := ListenVsock(0)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		ln.Close()
		fmt.Println("ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestListenVsockUnprivileged: a user other than root (the vm-monitor's own) opens the
// vsock listener, though /dev/vsock is 0600 root (vsock.Listen opened it for the
// machine's context ID and failed with "permission denied").
func TestListenVsockUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the listener as nobody")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip(err)
	}
	probe, err := ListenVsock(0)
	if err != nil {
		t.Skipf("vsock not available: %v", err)
	}
	probe.Close()
	bin := execxtest.SelfForOthers(t)
	res, err := execx.Run(context.Background(), execx.Cmd{Path: bin, User: "nobody", Env: []string{listenAsEnv + "=1"}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "ok" {
		t.Errorf("ListenVsock as nobody: %q %v", res.Stdout, err)
	}
}
