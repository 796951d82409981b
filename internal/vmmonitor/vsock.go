package vmmonitor

import (
	"fmt"
	"net"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// ListenVsock opens a vsock listener on port (DefaultPort is the usual one) at any of
// this machine's context IDs (VMADDR_CID_ANY), for Serve. Inside a VM that is the guest's
// CID, which the host reaches with a vhost-vsock device; NeonVM gives its guests none
// today, so the stock agent dials TCP (reference/vm-monitor-protocol.md §1.7). Binding
// any CID, rather than asking /dev/vsock for the machine's own (vsock.Listen), needs no
// access to /dev/vsock (0600 root on Debian): the vm-monitor runs as its own user.
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
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
