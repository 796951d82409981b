package vmmonitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ProtocolVersion is one version of the agent<->monitor protocol (the agent's
// api.MonitorProtoVersion, a uint32 on the wire).
type ProtocolVersion uint32

// The versions this monitor speaks: v1.0 only, the only one there is.
const (
	ProtocolV1_0       ProtocolVersion = 1
	MinProtocolVersion                 = ProtocolV1_0
	MaxProtocolVersion                 = ProtocolV1_0
)

// String names v the agent's way ("v1.0"). The reference's Display of an unknown
// version formats itself and recurses until the stack overflows; here it is a number.
func (v ProtocolVersion) String() string {
	switch v {
	case 0:
		return "<invalid: zero>"
	case ProtocolV1_0:
		return "v1.0"
	default:
		return "<unknown: " + strconv.FormatUint(uint64(v), 10) + ">"
	}
}

// versionRange is the agent's first frame, api.VersionRange: {"min":1,"max":1}, both
// bounds inclusive.
type versionRange struct {
	Min ProtocolVersion
	Max ProtocolVersion
}

func (r versionRange) String() string {
	if r.Min == r.Max {
		return r.Min.String()
	}
	return r.Min.String() + " to " + r.Max.String()
}

// protocolResponse is the monitor's answer to the range, api.MonitorProtocolResponse:
// {"version":1} or {"error":"..."}.
type protocolResponse struct {
	Version ProtocolVersion `json:"version,omitempty"`
	Error   *string         `json:"error,omitempty"`
}

// negotiate decides the handshake from the agent's first frame: the highest version
// both ranges hold, or the error text to answer with.
func negotiate(data []byte) (ProtocolVersion, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return 0, fmt.Errorf("decode protocol version range: %w", err)
	}
	var r versionRange
	if err := requireField(obj, "min", (*uint32)(&r.Min)); err != nil {
		return 0, fmt.Errorf("decode protocol version range: %w", err)
	}
	if err := requireField(obj, "max", (*uint32)(&r.Max)); err != nil {
		return 0, fmt.Errorf("decode protocol version range: %w", err)
	}
	if r.Min > r.Max {
		return 0, fmt.Errorf("min version = %s is greater than max version = %s", r.Min, r.Max)
	}
	ours := versionRange{Min: MinProtocolVersion, Max: MaxProtocolVersion}
	lo, hi := max(r.Min, ours.Min), min(r.Max, ours.Max)
	if lo > hi {
		return 0, fmt.Errorf("received protocol version range %s which does not overlap with %s", r, ours)
	}
	return hi, nil
}

// Allocation is what the VM has or is to have, the agent's api.Allocation: vCPUs and
// bytes of memory.
type Allocation struct {
	CPU float64 `json:"cpu"`
	Mem uint64  `json:"mem"`
}

// The message types of protocol v1.0, as the "type" field names them.
const (
	typeHealthCheck         = "HealthCheck"
	typeUpscaleNotification = "UpscaleNotification"
	typeDownscaleRequest    = "DownscaleRequest"
	typeInvalidMessage      = "InvalidMessage"
	typeInternalError       = "InternalError"
	// Sent by the monitor only.
	typeUpscaleConfirmation = "UpscaleConfirmation"
	typeUpscaleRequest      = "UpscaleRequest"
	typeDownscaleResult     = "DownscaleResult"
)

// inbound is one decoded agent->monitor message:
// {"type":"<T>","id":<n>,"content":{...}} (api.SerializeMonitorMessage).
type inbound struct {
	Type string
	ID   uint64
	// Alloc is the granted allocation of an UpscaleNotification or the target of a
	// DownscaleRequest.
	Alloc Allocation
	// Error is the text of an InvalidMessage or InternalError.
	Error string
}

// decodeError is why an agent frame could not be decoded. HasID tells whether its id
// could be read first, so that an InvalidMessage can answer it.
type decodeError struct {
	ID    uint64
	HasID bool
	// Type is the message type when it was read.
	Type string
	// Unknown is set when the frame is well formed but its type is not one the agent
	// sends (the frame is otherwise not looked at).
	Unknown bool
	Err     error
}

func (e *decodeError) Error() string { return e.Err.Error() }
func (e *decodeError) Unwrap() error { return e.Err }

// decodeInbound decodes one agent->monitor text frame. Keys match exactly (as serde
// does, unlike encoding/json's case-insensitive struct fields); unknown keys are
// ignored; "type", "id" and "content" are required, and so is every field of the
// content (null counts as missing). A failure is a *decodeError.
func decodeInbound(data []byte) (inbound, error) {
	var m inbound
	fail := func(hasID bool, err error) (inbound, error) {
		return inbound{}, &decodeError{ID: m.ID, HasID: hasID, Type: m.Type, Err: err}
	}
	obj, err := decodeObject(data)
	if err != nil {
		return fail(false, err)
	}
	if err := requireField(obj, "id", &m.ID); err != nil {
		return fail(false, err)
	}
	if err := requireField(obj, "type", &m.Type); err != nil {
		return fail(true, err)
	}
	switch m.Type {
	case typeHealthCheck, typeUpscaleNotification, typeDownscaleRequest, typeInvalidMessage, typeInternalError:
	default:
		return inbound{}, &decodeError{ID: m.ID, HasID: true, Type: m.Type, Unknown: true,
			Err: fmt.Errorf("received message of unknown type: %q", m.Type)}
	}
	var content map[string]json.RawMessage
	if err := requireField(obj, "content", &content); err != nil {
		return fail(true, fmt.Errorf("%s: %w", m.Type, err))
	}
	switch m.Type {
	case typeUpscaleNotification:
		err = requireAllocation(content, "granted", &m.Alloc)
	case typeDownscaleRequest:
		err = requireAllocation(content, "target", &m.Alloc)
	case typeInvalidMessage, typeInternalError:
		err = requireField(content, "error", &m.Error)
	}
	if err != nil {
		return fail(true, fmt.Errorf("%s: content: %w", m.Type, err))
	}
	return m, nil
}

// decodeObject decodes data as one JSON object, keeping its values raw.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("not a JSON object: null")
	}
	return obj, nil
}

var jsonNull = []byte("null")

// requireField decodes obj[key] into v; a missing key or null is an error.
func requireField(obj map[string]json.RawMessage, key string, v any) error {
	raw, ok := obj[key]
	if !ok || bytes.Equal(raw, jsonNull) {
		return fmt.Errorf("missing field %q", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("field %q: %w", key, err)
	}
	if p, ok := v.(*map[string]json.RawMessage); ok && *p == nil {
		return fmt.Errorf("field %q: not an object", key)
	}
	return nil
}

func requireAllocation(obj map[string]json.RawMessage, key string, a *Allocation) error {
	var fields map[string]json.RawMessage
	if err := requireField(obj, key, &fields); err != nil {
		return err
	}
	if err := requireField(fields, "cpu", &a.CPU); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := requireField(fields, "mem", &a.Mem); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// outbound is one monitor->agent message. Its fields sit at the top level beside "type"
// and "id" (the agent decodes the whole frame into the typed struct), and a
// DownscaleResult's keys are "Ok" and "Status", the untagged Go field names of
// api.DownscaleResult. Messages without fields (HealthCheck, UpscaleConfirmation,
// UpscaleRequest) are just {"type","id"}.
type outbound struct {
	Type   string  `json:"type"`
	ID     uint64  `json:"id"`
	Ok     *bool   `json:"Ok,omitempty"`
	Status *string `json:"Status,omitempty"`
	Error  *string `json:"error,omitempty"`
}

func (o outbound) encode() []byte {
	b, err := json.Marshal(o)
	if err != nil {
		// Only strings, numbers and booleans: Marshal cannot fail.
		panic("vmmonitor: encode " + o.Type + ": " + err.Error())
	}
	return b
}

func msgHealthCheck(id uint64) outbound { return outbound{Type: typeHealthCheck, ID: id} }
func msgUpscaleConfirmation(id uint64) outbound {
	return outbound{Type: typeUpscaleConfirmation, ID: id}
}
func msgUpscaleRequest(id uint64) outbound { return outbound{Type: typeUpscaleRequest, ID: id} }
func msgDownscaleResult(id uint64, ok bool, status string) outbound {
	return outbound{Type: typeDownscaleResult, ID: id, Ok: &ok, Status: &status}
}
func msgInvalidMessage(id uint64, text string) outbound {
	return outbound{Type: typeInvalidMessage, ID: id, Error: &text}
}
func msgInternalError(id uint64, text string) outbound {
	return outbound{Type: typeInternalError, ID: id, Error: &text}
}
