package vmmonitor

import (
	"encoding/json"
	"errors"
	"testing"
)

// agentFrame frames m the agent's way (api.SerializeMonitorMessage), from plain maps.
func agentFrame(m inbound) []byte {
	var content any = map[string]any{}
	alloc := map[string]any{"cpu": m.Alloc.CPU, "mem": m.Alloc.Mem}
	switch m.Type {
	case typeUpscaleNotification:
		content = map[string]any{"granted": alloc}
	case typeDownscaleRequest:
		content = map[string]any{"target": alloc}
	case typeInvalidMessage, typeInternalError:
		content = map[string]any{"error": m.Error}
	}
	b, err := json.Marshal(map[string]any{"content": content, "type": m.Type, "id": m.ID})
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecodeAgentFrame feeds the agent->monitor frame decoder arbitrary text. It must
// never panic; a failure is a *decodeError that has an id whenever it is an unknown
// type; a success frames again the agent's way to the same message; the answer the
// server would send encodes and carries the request's id.
func FuzzDecodeAgentFrame(f *testing.F) {
	for _, s := range []string{
		`{"content":{},"type":"HealthCheck","id":2}`,
		`{"content":{"granted":{"cpu":1.5,"mem":4294967296}},"type":"UpscaleNotification","id":4}`,
		`{"content":{"target":{"cpu":0.25,"mem":1073741824}},"type":"DownscaleRequest","id":6}`,
		`{"content":{"error":"Received HealthCheck with id 3 but id is unknown"},"type":"InvalidMessage","id":3}`,
		`{"content":{"error":"x"},"type":"InternalError","id":8}`,
		`{"content":{},"type":"Bogus","id":10}`,
		`{"type":"HealthCheck","id":2}`,
		`{"content":null,"type":"HealthCheck","id":2}`,
		`{"content":{"target":{"cpu":1,"mem":-1}},"type":"DownscaleRequest","id":2}`,
		`{"content":{"target":{"cpu":1e308,"mem":18446744073709551615}},"type":"DownscaleRequest","id":18446744073709551615}`,
		`{"id":1.5}`, `{"id":"2"}`, `[]`, `null`, `"x"`, `{}`, ``, "\xff\xfe",
		`{"content":{"error":"\ud800"},"type":"InternalError","id":2}`,
		`{"min":1,"max":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeInbound(data)
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is a %T, not a *decodeError", err, err)
			}
			if de.Unknown && !de.HasID {
				t.Fatalf("unknown type without an id: %v", err)
			}
			if de.HasID {
				checkAnswer(t, msgInvalidMessage(de.ID, err.Error()), de.ID)
			}
			return
		}
		again, err := decodeInbound(agentFrame(m))
		if err != nil || again != m {
			t.Fatalf("%q decoded to %+v; framed again the agent's way: %+v, %v", data, m, again, err)
		}
		switch m.Type {
		case typeHealthCheck:
			checkAnswer(t, msgHealthCheck(m.ID), m.ID)
		case typeDownscaleRequest:
			checkAnswer(t, msgDownscaleResult(m.ID, false, "denied"), m.ID)
		case typeUpscaleNotification:
			checkAnswer(t, msgUpscaleConfirmation(m.ID), m.ID)
		}
	})
}

// checkAnswer decodes o's frame the agent's way: a map with a string "type" and a
// numeric "id" (a float64 there, exact below 2^53).
func checkAnswer(t *testing.T, o outbound, id uint64) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(o.encode(), &m); err != nil {
		t.Fatalf("answer %s does not decode: %v", o.encode(), err)
	}
	f, ok := m["id"].(float64)
	if _, isStr := m["type"].(string); !ok || !isStr {
		t.Fatalf("answer %s has no type or id", o.encode())
	}
	if id < 1<<53 && uint64(f) != id {
		t.Fatalf("answer id %v, want %d", f, id)
	}
}

// FuzzNegotiate feeds the handshake's first frame: never a panic, and a version only
// when the range holds v1.0.
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{`{"min":1,"max":1}`, `{"min":2,"max":2}`, `{"min":2,"max":1}`, `{"min":0,"max":9}`, `{"min":1}`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := negotiate(data)
		if err != nil {
			if v != 0 {
				t.Fatalf("version %v with error %v", v, err)
			}
			return
		}
		if v != ProtocolV1_0 {
			t.Fatalf("%q: version %v, want v1.0", data, v)
		}
	})
}
