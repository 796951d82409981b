package execx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	p := startReady(t, ctx, Cmd{Path: "/bin/sh", Args: []string{"-c", "echo ready; exec sleep 600"}})
	cancel()
	if _, err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Wait after cancel = %v, want killed", err)
	}
}

// startReady starts c and reads the "ready" line it prints first.
func startReady(t *testing.T, ctx context.Context, c Cmd) *Process {
	t.Helper()
	p, err := Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(p.Stdout(), buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	return p
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

// With CancelSignal, ctx's end sends that signal instead of SIGKILL: the process can end
// itself (a postmaster's immediate shutdown).
func TestCancelSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := startReady(t, ctx, Cmd{Path: "/bin/sh", CancelSignal: syscall.SIGQUIT,
		Args: []string{"-c", "trap 'kill $!; echo quit; exit 7' QUIT; echo ready; sleep 600 >/dev/null 2>&1 & wait"}})
	cancel()
	rest, _ := io.ReadAll(p.Stdout())
	if _, err := p.Wait(); err == nil || !strings.Contains(err.Error(), "exit status 7") || string(rest) != "quit\n" {
		t.Fatalf("after cancel: output %q, Wait = %v; want the trap's output and exit status 7", rest, err)
	}
}

// With OwnGroup, ctx's end reaches the children the process started too.
func TestOwnGroupKillsChildren(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	pidFile := filepath.Join(t.TempDir(), "child")
	go func() {
		_, err := Run(ctx, Cmd{Path: "/bin/sh", OwnGroup: true,
			Args: []string{"-c", "sleep 600 >/dev/null 2>&1 & echo $! >" + pidFile + "; wait"}})
		done <- err
	}()
	var child int
	for deadline := time.Now().Add(time.Minute); child == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the child's pid was never written")
		}
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Run after cancel = %v, want killed", err)
	}
	// The child is gone (or a zombie waiting for its new parent to reap it).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("the child %d outlived its killed group", child)
		}
	}
}
