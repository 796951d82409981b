package vmmonitor

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// The monitor->agent frames, byte for byte, as the reference's serde output and the
// agent's decoder expect them: flattened fields, "Ok"/"Status", {"type","id"} alone for
// the empty structs.
func TestOutboundGolden(t *testing.T) {
	for _, tc := range []struct {
		msg  outbound
		want string
	}{
		{msgHealthCheck(2), `{"type":"HealthCheck","id":2}`},
		{msgUpscaleConfirmation(4), `{"type":"UpscaleConfirmation","id":4}`},
		{msgUpscaleRequest(3), `{"type":"UpscaleRequest","id":3}`},
		{msgDownscaleResult(6, true, "set cgroup memory threshold"), `{"type":"DownscaleResult","id":6,"Ok":true,"Status":"set cgroup memory threshold"}`},
		{msgDownscaleResult(8, false, ""), `{"type":"DownscaleResult","id":8,"Ok":false,"Status":""}`},
		{msgInvalidMessage(10, `bad "x"`), `{"type":"InvalidMessage","id":10,"error":"bad \"x\""}`},
		{msgInternalError(12, "boom"), `{"type":"InternalError","id":12,"error":"boom"}`},
	} {
		if got := string(tc.msg.encode()); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.msg.Type, got, tc.want)
		}
	}
}

// The agent decodes a frame as a map for "type" and "id" (a float64), then whole into
// its typed struct (pkg/agent/dispatcher.go HandleMessage); a DownscaleResult decodes
// into api.DownscaleResult's untagged Ok and Status.
func TestOutboundDecodesTheAgentsWay(t *testing.T) {
	var m map[string]any
	data := msgDownscaleResult(14, true, "fine").encode()
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "DownscaleResult" || m["id"] != float64(14) {
		t.Fatalf("type/id: %v", m)
	}
	var res struct {
		Ok     bool
		Status string
	}
	if err := json.Unmarshal(data, &res); err != nil || !res.Ok || res.Status != "fine" {
		t.Fatalf("DownscaleResult: %+v %v", res, err)
	}
}

func TestDecodeInbound(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     inbound
	}{
		// The agent's wsjson.Write ends each frame with a newline.
		{"health check", "{\"content\":{},\"type\":\"HealthCheck\",\"id\":2}\n", inbound{Type: typeHealthCheck, ID: 2}},
		{"upscale", `{"content":{"granted":{"cpu":1.5,"mem":4294967296}},"type":"UpscaleNotification","id":4}`,
			inbound{Type: typeUpscaleNotification, ID: 4, Alloc: Allocation{CPU: 1.5, Mem: 4 << 30}}},
		{"downscale", `{"content":{"target":{"cpu":0.25,"mem":1073741824}},"type":"DownscaleRequest","id":18446744073709551614}`,
			inbound{Type: typeDownscaleRequest, ID: 1<<64 - 2, Alloc: Allocation{CPU: 0.25, Mem: 1 << 30}}},
		{"invalid message", `{"content":{"error":"what?"},"type":"InvalidMessage","id":3}`, inbound{Type: typeInvalidMessage, ID: 3, Error: "what?"}},
		{"internal error", `{"content":{"error":"oops"},"type":"InternalError","id":5}`, inbound{Type: typeInternalError, ID: 5, Error: "oops"}},
		{"unknown keys ignored", `{"content":{"x":1},"type":"HealthCheck","id":2,"extra":true}`, inbound{Type: typeHealthCheck, ID: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeInbound([]byte(tc.in))
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeInboundErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in       string
		hasID, unknown bool
		id             uint64
		errHas         string
	}{
		{"not json", `hello`, false, false, 0, "not a JSON object"},
		{"array", `[1,2]`, false, false, 0, "not a JSON object"},
		{"null", `null`, false, false, 0, "not a JSON object"},
		{"no id", `{"type":"HealthCheck","content":{}}`, false, false, 0, `missing field "id"`},
		{"negative id", `{"type":"HealthCheck","id":-2,"content":{}}`, false, false, 0, `field "id"`},
		{"float id", `{"type":"HealthCheck","id":2.5,"content":{}}`, false, false, 0, `field "id"`},
		{"no type", `{"id":2,"content":{}}`, true, false, 2, `missing field "type"`},
		{"type not a string", `{"id":2,"type":7,"content":{}}`, true, false, 2, `field "type"`},
		{"case matters", `{"id":2,"Type":"HealthCheck","content":{}}`, true, false, 2, `missing field "type"`},
		{"unknown type", `{"id":4,"type":"Bogus","content":{}}`, true, true, 4, `unknown type: "Bogus"`},
		{"monitor's type from the agent", `{"id":4,"type":"UpscaleRequest","content":{}}`, true, true, 4, "unknown type"},
		{"no content", `{"id":6,"type":"HealthCheck"}`, true, false, 6, `missing field "content"`},
		{"content null", `{"id":6,"type":"HealthCheck","content":null}`, true, false, 6, `missing field "content"`},
		{"content not an object", `{"id":6,"type":"HealthCheck","content":[]}`, true, false, 6, `field "content"`},
		{"no granted", `{"id":8,"type":"UpscaleNotification","content":{}}`, true, false, 8, `missing field "granted"`},
		{"no mem", `{"id":8,"type":"DownscaleRequest","content":{"target":{"cpu":1}}}`, true, false, 8, `missing field "mem"`},
		{"negative mem", `{"id":8,"type":"DownscaleRequest","content":{"target":{"cpu":1,"mem":-1}}}`, true, false, 8, `field "mem"`},
		{"cpu a string", `{"id":8,"type":"DownscaleRequest","content":{"target":{"cpu":"1","mem":1}}}`, true, false, 8, `field "cpu"`},
		{"no error text", `{"id":9,"type":"InternalError","content":{}}`, true, false, 9, `missing field "error"`},
		{"trailing garbage", `{"id":2,"type":"HealthCheck","content":{}} x`, false, false, 0, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeInbound([]byte(tc.in))
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v, want a *decodeError", err)
			}
			if de.HasID != tc.hasID || de.Unknown != tc.unknown || (tc.hasID && de.ID != tc.id) {
				t.Errorf("got %+v", de)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not contain %q", err, tc.errHas)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		in, errHas string
		want       ProtocolVersion
	}{
		{`{"min":1,"max":1}`, "", ProtocolV1_0},
		{`{"min":0,"max":5}`, "", ProtocolV1_0},
		{`{"max":3,"min":1,"other":"x"}`, "", ProtocolV1_0},
		{`{"min":2,"max":2}`, "received protocol version range <unknown: 2> which does not overlap with v1.0", 0},
		{`{"min":0,"max":0}`, "does not overlap", 0},
		{`{"min":4294967295,"max":4294967295}`, "does not overlap", 0},
		{`{"min":2,"max":1}`, "min version = <unknown: 2> is greater than max version = v1.0", 0},
		{`{"min":1}`, `missing field "max"`, 0},
		{`{"min":-1,"max":1}`, `field "min"`, 0},
		{`{"min":4294967296,"max":1}`, `field "min"`, 0},
		{`nonsense`, "not a JSON object", 0},
	} {
		got, err := negotiate([]byte(tc.in))
		if tc.errHas == "" {
			if err != nil || got != tc.want {
				t.Errorf("%s: got %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.errHas)
		}
	}
}

// The handshake answers, byte for byte.
func TestProtocolResponseGolden(t *testing.T) {
	text := "no overlap"
	for _, tc := range []struct {
		r    protocolResponse
		want string
	}{
		{protocolResponse{Version: ProtocolV1_0}, `{"version":1}`},
		{protocolResponse{Error: &text}, `{"error":"no overlap"}`},
	} {
		b, err := json.Marshal(tc.r)
		if err != nil || string(b) != tc.want {
			t.Errorf("got %s, %v; want %s", b, err, tc.want)
		}
	}
}
