package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// childEnv makes the test binary a holder process: it joins the cgroup named by the
// variable, allocates and touches CGROUP_TEST_HOLD bytes, says "ready" and waits for its
// stdin to close.
const childEnv = "CGROUP_TEST_CHILD_CGROUP"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(holdMemory(dir))
	}
	os.Exit(m.Run())
}

var held []byte

func holdMemory(dir string) int {
	n, err := strconv.ParseUint(os.Getenv("CGROUP_TEST_HOLD"), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	held = make([]byte, n)
	for i := range held {
		held[i] = byte(i)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(held)
	return 0
}

type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startHolder runs the test binary as a holder of n bytes in cgroup dir and waits until
// it holds them.
func startHolder(t *testing.T, dir string, n uint64) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, "CGROUP_TEST_HOLD="+strconv.FormatUint(n, 10))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd, stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		h.stop(t)
		t.Fatalf("holder process: %q, %v", line, err)
	}
	return h
}

func (h *holder) stop(t *testing.T) {
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("holder process: %v", err)
	}
}
