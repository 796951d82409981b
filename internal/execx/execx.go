// Package execx is the one way this project runs a process: with a context, the argv
// logged (secrets redacted), optionally as another user, and the tail of stderr in the
// returned error; its output buffered (Run) or streamed to the caller (Start).
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/computetools/compute-tools/internal/redact"
)

// waitDelay bounds the wait for the output pipes after the process was killed.
const waitDelay = 5 * time.Second

// Cmd describes a process to run.
type Cmd struct {
	Path string
	Args []string
	// Env is added to a minimal environment (PATH, LANG=C.UTF-8 and, for User, HOME).
	Env []string
	Dir string
	// User, when set and we are root, runs the process as that user and its group.
	User string
	// Stdin, when set, is fed to the process.
	Stdin []byte
	// Secrets are replaced by "<redacted>" wherever they appear in logs and errors.
	Secrets []string
	// Log receives the command line and its duration at debug level (nil: slog.Default()).
	Log *slog.Logger
	// CancelSignal is what the process gets when ctx ends (0: SIGKILL); a process that
	// has not exited 5 s later is killed. A postmaster takes SIGQUIT: it ends its
	// children itself, where SIGKILL would leave them behind.
	CancelSignal syscall.Signal
	// OwnGroup runs the process in a process group of its own and sends CancelSignal to
	// the whole group, for a tool whose children would outlive it (initdb's bootstrap
	// backend, which writes into the directory a caller then removes).
	OwnGroup bool
}

// Result is what a finished process left behind.
type Result struct {
	Stdout   []byte
	Stderr   []byte
	Duration time.Duration
}

// Run runs c and waits for it. A non-zero exit is an error that quotes the last lines of
// stderr (or stdout when stderr is empty).
func Run(ctx context.Context, c Cmd) (Result, error) {
	cmd, err := c.command(ctx)
	if err != nil {
		return Result{}, err
	}
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	argv := redact.String(strings.Join(append([]string{c.Path}, c.Args...), " "), c.Secrets...)
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	log.Debug("exec", "argv", argv, "user", c.User)
	start := time.Now()
	err = cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(start)}
	if err != nil {
		detail := tail(res.Stderr, 8)
		if detail == "" {
			detail = tail(res.Stdout, 8)
		}
		detail = redact.String(detail, c.Secrets...)
		var ee *exec.ExitError
		if errors.As(err, &ee) && detail != "" {
			return res, fmt.Errorf("%s: %s: %s", argv, ee.ProcessState, detail)
		}
		return res, fmt.Errorf("%s: %w", argv, err)
	}
	log.Debug("exec done", "argv", argv, "exec_ms", res.Duration.Milliseconds())
	return res, nil
}

// command builds the exec.Cmd of c (both Run and Start): the minimal environment, the
// user, and how ctx's end stops it.
func (c Cmd) command(ctx context.Context) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	// Once ctx ends and the process is stopped, a child it left holding stdout or stderr
	// cannot keep the caller waiting, nor a process that ignores CancelSignal.
	cmd.WaitDelay = waitDelay
	cmd.Dir = c.Dir
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, c.Env...)
	attr := &syscall.SysProcAttr{Setpgid: c.OwnGroup}
	if c.User != "" && os.Geteuid() == 0 {
		cred, home, err := lookup(c.User)
		if err != nil {
			return nil, err
		}
		attr.Credential = cred
		cmd.Env = append(cmd.Env, "HOME="+home)
	}
	cmd.SysProcAttr = attr
	if c.CancelSignal != 0 || c.OwnGroup {
		sig := c.CancelSignal
		if sig == 0 {
			sig = syscall.SIGKILL
		}
		cmd.Cancel = func() error {
			pid := cmd.Process.Pid
			if c.OwnGroup {
				pid = -pid
			}
			return syscall.Kill(pid, sig)
		}
	}
	return cmd, nil
}

func lookup(name string) (*syscall.Credential, string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, "", fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, u.HomeDir, nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
