package vmmonitor

import (
	"fmt"
	"net"

	"github.com/mdlayher/vsock"
)

// ListenVsock opens a vsock listener on port (DefaultPort is the usual one) at this
// machine's own context ID, for Serve. Inside a VM that is the guest's CID, which the
// host reaches with a vhost-vsock device; NeonVM gives its guests none today, so the
// stock agent dials TCP (reference/vm-monitor-protocol.md §1.7).
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return l, nil
}

// listenVsockCID is ListenVsock at an explicit context ID (tests bind to vsock.Local).
func listenVsockCID(cid, port uint32) (net.Listener, error) {
	l, err := vsock.ListenContextID(cid, port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock %d:%d: %w", cid, port, err)
	}
	return l, nil
}
