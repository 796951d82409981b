package agenttest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// scriptedMonitor serves one WebSocket at /monitor and hands it to the test.
func scriptedMonitor(t *testing.T) (url string, conns <-chan *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		ch <- c
		<-done
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/monitor", ch
}

// expectFrame reads one frame from the agent: want and the newline that wsjson.Write
// (a json.Encoder) ends every frame of the agent with.
func expectFrame(t *testing.T, c *websocket.Conn, want string) {
	t.Helper()
	typ, got, err := c.Read(context.Background())
	if err != nil || typ != websocket.MessageText || string(got) != want+"\n" {
		t.Fatalf("agent sent %v %s, %v; want %s", typ, got, err, want)
	}
}

func write(t *testing.T, c *websocket.Conn, frame string) {
	t.Helper()
	if err := c.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// The harness's frames, byte for byte, are the agent's (api.SerializeMonitorMessage's
// field order: content, type, id), and it reads the monitor's the agent's way.
func TestAgentFrames(t *testing.T) {
	bg := context.Background()
	url, conns := scriptedMonitor(t)
	dialed := make(chan *Agent, 1)
	go func() {
		a, err := Dial(bg, url, Options{})
		if err != nil {
			t.Error(err)
		}
		dialed <- a
	}()
	m := <-conns
	expectFrame(t, m, `{"min":1,"max":1}`)
	write(t, m, `{"version":1}`)
	a := <-dialed
	if a == nil {
		t.FailNow()
	}
	defer a.Vanish()

	errc := make(chan error, 1)
	go func() { errc <- a.HealthCheck(bg) }()
	expectFrame(t, m, `{"content":{},"type":"HealthCheck","id":2}`)
	write(t, m, `{"type":"HealthCheck","id":2}`)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	go func() { errc <- a.NotifyUpscale(bg, 1.5, 1<<30) }()
	expectFrame(t, m, `{"content":{"granted":{"cpu":1.5,"mem":1073741824}},"type":"UpscaleNotification","id":4}`)
	write(t, m, `{"type":"UpscaleConfirmation","id":4}`)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	type dres struct {
		ok     bool
		status string
		err    error
	}
	dc := make(chan dres, 1)
	go func() {
		ok, status, err := a.RequestDownscale(bg, 0.5, 512<<20)
		dc <- dres{ok, status, err}
	}()
	expectFrame(t, m, `{"content":{"target":{"cpu":0.5,"mem":536870912}},"type":"DownscaleRequest","id":6}`)
	write(t, m, `{"type":"DownscaleResult","id":6,"Ok":false,"Status":"not now"}`)
	if r := <-dc; r.err != nil || r.ok || r.status != "not now" {
		t.Fatalf("downscale result %+v", r)
	}

	go func() { errc <- a.HealthCheck(bg) }()
	expectFrame(t, m, `{"content":{},"type":"HealthCheck","id":8}`)
	write(t, m, `{"type":"InternalError","id":8,"error":"broken"}`)
	var ie *InternalError
	if err := <-errc; !errors.As(err, &ie) || ie.Text != "broken" {
		t.Fatalf("InternalError answer: %v", err)
	}

	write(t, m, `{"type":"UpscaleRequest","id":3}`)
	write(t, m, `{"type":"Whatever","id":5}`)
	expectFrame(t, m, `{"content":{"error":"Received message of unknown type: \"Whatever\""},"type":"InvalidMessage","id":5}`)
	if id := <-a.UpscaleRequests(); id != 3 {
		t.Fatalf("upscale request id %d", id)
	}
	write(t, m, `{"type":"HealthCheck","id":100}`)
	expectFrame(t, m, `{"content":{"error":"Received HealthCheck with id 100 but id is unknown or already timed out waiting for a reply"},"type":"InvalidMessage","id":100}`)

	// A frame that is not JSON ends the agent's connection: wsjson.Read closes it with
	// 1007 (and the 1011 of the agent's own exit comes too late to count).
	write(t, m, `not json`)
	_, _, err := m.Read(bg)
	if websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("after garbage the agent closed with %v, want 1007", err)
	}
	<-a.Done()
}

func TestAgentHandshakeError(t *testing.T) {
	url, conns := scriptedMonitor(t)
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(context.Background(), url, Options{MinVersion: 2, MaxVersion: 3})
		errc <- err
	}()
	m := <-conns
	expectFrame(t, m, `{"min":2,"max":3}`)
	write(t, m, `{"error":"nope"}`)
	if _, _, err := m.Read(context.Background()); websocket.CloseStatus(err) != websocket.StatusProtocolError {
		t.Fatalf("agent closed with %v, want 1002", err)
	}
	var he *HandshakeError
	if err := <-errc; !errors.As(err, &he) || he.Text != "nope" {
		t.Fatalf("Dial: %v", err)
	}
}
