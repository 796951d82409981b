package vmmonitor

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/mdlayher/vsock"

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

// ListenVsock binds this machine's own context ID; only a machine without vsock at all
// (no /dev/vsock, no AF_VSOCK) skips.
func TestListenVsock(t *testing.T) {
	ln, err := ListenVsock(0)
	if err != nil {
		t.Skipf("vsock not available: %v", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*vsock.Addr)
	if !ok || addr.Port == 0 || addr.ContextID == vsock.Local {
		t.Fatalf("listening on %v", ln.Addr())
	}
}
