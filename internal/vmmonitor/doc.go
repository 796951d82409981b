// Package vmmonitor is the vm-monitor's side of the autoscaler agent protocol, v1.0:
// the wire format, the version handshake and the server that the agent
// (neondatabase/autoscaling's autoscaler-agent) dials. It replaces Neon's Rust
// libs/vm_monitor (protocol.rs, dispatcher.rs, runner.rs, lib.rs; read at neon
// 6a35a3e9f1) and interoperates with the agent's pkg/api/types.go and
// pkg/agent/dispatcher.go (autoscaling a4bce09e4d); where the two disagree, the agent's
// code decides. What the memory side decides (cgroup watching, thresholds, LFC sizing,
// MemoryHigh) is behind Policy, implemented elsewhere; compute-monitor vm-monitor wires
// a Policy and the listeners (TCP, vsock via ListenVsock) into a Server.
//
// # Transport
//
// A WebSocket (github.com/coder/websocket, the agent's library) at Path (/monitor)
// only; any other path is 404, a plain GET of /monitor 426. Serve takes a net.Listener,
// so the caller picks TCP (0.0.0.0:10301, what the stock agent dials through NeonVM's
// port forwarding) and/or vsock (DefaultPort, 10301). One agent connection at a time,
// across all listeners of a Server: a newer connection replaces the current one, which
// is closed with status 1000 "replaced by a newer connection". Closing statuses: 1001
// when the server stops, 1002 after a failed handshake or an undecodable frame, 1011
// when Policy.Reset fails.
//
// # Wire format (asymmetric, as the agent has it)
//
//   - Handshake: the agent's first frame is its version range {"min":1,"max":1}; the
//     answer is {"version":1}, or {"error":"..."} when the range does not hold v1.0 or
//     min > max (then the connection is closed). The handshake and Policy.Reset must
//     fit in HandshakeTimeout (4 s) from the accept.
//   - Agent -> monitor: {"type":"<T>","id":<n>,"content":{...}}, the agent's ids even
//     (2, 4, ...). Types: HealthCheck {}, UpscaleNotification {"granted":{"cpu","mem"}},
//     DownscaleRequest {"target":{"cpu","mem"}}, InvalidMessage and InternalError
//     {"error"}. Keys match exactly; "type", "id", "content" and every content field
//     are required (null counts as missing); other keys are ignored.
//   - Monitor -> agent: the fields flattened beside "type" and "id":
//     {"type":"HealthCheck","id":2}, {"type":"UpscaleConfirmation","id":4},
//     {"type":"DownscaleResult","id":6,"Ok":true,"Status":"..."} (capitalised keys:
//     api.DownscaleResult has no json tags), {"type":"InternalError","id":6,"error":"..."},
//     {"type":"InvalidMessage","id":8,"error":"..."}, {"type":"UpscaleRequest","id":3}.
//     A reply echoes its request's id; the monitor's own ids (UpscaleRequest) are odd:
//     a per-connection counter starts at 1 and grows by 2 before each send, so the
//     first is 3.
//
// # What each frame gets
//
//	HealthCheck             HealthCheck, same id, at once (by the reader)
//	UpscaleNotification     Policy.Upscale, then UpscaleConfirmation or InternalError
//	DownscaleRequest        Policy.Downscale, then DownscaleResult{Ok,Status} (a denial
//	                        is Ok:false, an answer) or InternalError
//	InvalidMessage          logged (warning), no answer
//	InternalError           logged (warning), no answer
//	unknown "type"          InvalidMessage with its id; the connection goes on
//	undecodable text        logged; InvalidMessage when its id could be read; the
//	                        connection is closed (1002)
//	binary or other frame   logged (warning) and ignored
//	memory pressure         UpscaleRequest (Policy.UpscaleRequests), at most one per
//	                        UpscaleRequestInterval (1 s) per connection
//
// Upscale and downscale messages go through the Policy one at a time, in the order
// they came; the Policy is never called concurrently, across connections either (a
// replaced connection's call is cancelled and returns before the new connection's
// Reset). No agent input can end the server: a bad frame costs at most its connection.
//
// # Where this differs from the reference, on purpose
//
//   - A version range without v1.0 is answered {"error"} and the server goes on. The
//     Rust monitor formats the unsupported version with a Display that formats itself,
//     and dies of a stack overflow.
//   - A range with min > max, or a first frame that is not a range, is answered with
//     {"error"} too; the Rust monitor drops such a connection without an answer.
//   - An unknown message type is answered with InvalidMessage and the connection goes
//     on, as the agent does with one it does not know and as the protocol's
//     InvalidMessage is defined; the Rust monitor cannot deserialize it and drops the
//     connection. A frame we cannot decode at all drops the connection as in the
//     reference, after an InvalidMessage when its id was readable (the agent's way).
//   - A newer connection replaces the current one once its handshake has succeeded; the
//     Rust monitor kills the old one as soon as a new upgrade request arrives, so a
//     client that then fails its handshake leaves no connection at all.
//   - Health checks are answered as they arrive. The Rust monitor handles one message
//     at a time, so a health check waits behind a slow downscale.
//   - A Policy call ends (its ctx) when its connection ends or after CallTimeout (5 s,
//     the agent's response timeout); the Rust monitor finishes an upscale or downscale
//     whose agent has gone and whose answer nobody will read.
//   - Versions are uint32, as the agent's api.MonitorProtoVersion (the Rust monitor's
//     are u8).
package vmmonitor
