package vmmonitor

import (
	"context"
	"testing"

	"github.com/computetools/compute-tools/internal/vmmonitor/agenttest"
)

// trivialPolicy approves every downscale at once and never asks for memory.
type trivialPolicy struct{}

func (trivialPolicy) Reset(context.Context) error               { return nil }
func (trivialPolicy) Upscale(context.Context, Allocation) error { return nil }
func (trivialPolicy) Downscale(context.Context, Allocation) (bool, string, error) {
	return true, "ok", nil
}
func (trivialPolicy) UpscaleRequests() <-chan struct{} { return nil }

// The benchmarks run over loopback TCP on a shared machine: their figures are rough
// (bench/README.md has the ones measured).

// BenchmarkHandshake: the agent's connect: TCP, the WebSocket upgrade, the version
// range and the answer (the close is not timed).
func BenchmarkHandshake(b *testing.B) {
	ts := startServer(b, Config{Policy: trivialPolicy{}, Logger: slogDiscard()})
	for b.Loop() {
		a, err := agenttest.Dial(bg, ts.url, agenttest.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		a.Vanish()
		b.StartTimer()
	}
}

// BenchmarkHealthCheckRoundTrip: one HealthCheck call on an open connection.
func BenchmarkHealthCheckRoundTrip(b *testing.B) {
	ts := startServer(b, Config{Policy: trivialPolicy{}, Logger: slogDiscard()})
	a := ts.dial(b, agenttest.Options{})
	for b.Loop() {
		if err := a.HealthCheck(bg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownscaleRoundTrip: one DownscaleRequest call answered by a trivial policy.
func BenchmarkDownscaleRoundTrip(b *testing.B) {
	ts := startServer(b, Config{Policy: trivialPolicy{}, Logger: slogDiscard()})
	a := ts.dial(b, agenttest.Options{})
	for b.Loop() {
		if ok, _, err := a.RequestDownscale(bg, 1, 2<<30); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkDownscaleDecision: the monitor's own part of a downscale, without the
// socket: decode the frame, take the policy, decide (trivially), encode the answer.
func BenchmarkDownscaleDecision(b *testing.B) {
	srv := New(Config{Policy: trivialPolicy{}, Logger: slogDiscard()})
	frame := []byte(`{"content":{"target":{"cpu":0.5,"mem":2147483648}},"type":"DownscaleRequest","id":2}`)
	for b.Loop() {
		m, err := decodeInbound(frame)
		if err != nil {
			b.Fatal(err)
		}
		var ok bool
		var status string
		err = srv.withPolicy(bg, func() (err error) {
			ok, status, err = srv.policy.Downscale(bg, m.Alloc)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		_ = msgDownscaleResult(m.ID, ok, status).encode()
	}
}
