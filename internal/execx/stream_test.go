package execx

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
)

func TestStartStreamsAndReportsExit(t *testing.T) {
	p, err := Start(context.Background(), Cmd{Path: "/bin/sh", Args: []string{"-c", "echo out; echo secret-x >&2; exit 3"}, Secrets: []string{"secret-x"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(p.Stdout())
	if err != nil || string(out) != "out\n" {
		t.Fatalf("stdout %q, %v", out, err)
	}
	_, err = p.Wait()
	if err == nil || !strings.Contains(err.Error(), "exit status 3: <redacted>") {
		t.Fatalf("Wait = %v, want the exit status and the redacted stderr", err)
	}
	if _, again := p.Wait(); again == nil || again.Error() != err.Error() {
		t.Fatalf("second Wait = %v, want the same error", again)
	}
	if s := p.Stderr(); s != "<redacted>\n" {
		t.Fatalf("Stderr = %q", s)
	}
}

func TestStartKilledWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, Cmd{Path: "/bin/sh", Args: []string{"-c", "echo ready; exec sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(p.Stdout(), buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	cancel()
	if _, err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Wait after cancel = %v, want killed", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Cmd{Path: "/nonexistent/pg_dump"})
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Start = %v, want no such file", err)
	}
}

func TestCappedKeepsFirstBytes(t *testing.T) {
	c := &capped{max: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := string(c.bytes()); got != "abcde" {
		t.Fatalf("kept %q, want the first 5 bytes", got)
	}
}
