package execx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/computetools/compute-tools/internal/redact"
)

// maxStreamStderr bounds the stderr a streamed process keeps (its first bytes: where a
// failure to start is told).
const maxStreamStderr = 64 << 10

// Process is a started process whose stdout is read as it is written (Start).
type Process struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr *capped
	argv   string
	c      Cmd
	log    *slog.Logger
	start  time.Time

	waitOnce sync.Once
	res      Result
	err      error
}

// Start starts c with its stdout as a pipe (Stdout) instead of a buffer, for output too
// large to hold or that a caller passes on as it comes. The process is killed when ctx
// ends (or gets Cmd.CancelSignal). Its stderr is kept (the first 64 KiB). Wait must be called, after reading
// Stdout to its end or giving up on it.
func Start(ctx context.Context, c Cmd) (*Process, error) {
	cmd, err := c.command(ctx)
	if err != nil {
		return nil, err
	}
	stderr := &capped{max: maxStreamStderr}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	argv := redact.String(strings.Join(append([]string{c.Path}, c.Args...), " "), c.Secrets...)
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	log.Debug("exec", "argv", argv, "user", c.User, "streamed", true)
	p := &Process{cmd: cmd, stdout: stdout, stderr: stderr, argv: argv, c: c, log: log, start: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", argv, err)
	}
	return p, nil
}

// Stdout is the process's standard output.
func (p *Process) Stdout() io.Reader { return p.stdout }

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stderr is what the process wrote to stderr so far (the first 64 KiB), secrets redacted.
func (p *Process) Stderr() string { return redact.String(string(p.stderr.bytes()), p.c.Secrets...) }

// Wait waits for the process to exit (closing Stdout) and returns as Run does: a non-zero
// exit is an error quoting the end of stderr. Result.Stdout is empty (it was streamed).
// Calling it again returns the same.
func (p *Process) Wait() (Result, error) {
	p.waitOnce.Do(func() {
		err := p.cmd.Wait()
		p.res = Result{Stderr: p.stderr.bytes(), Duration: time.Since(p.start)}
		if err == nil {
			p.log.Debug("exec done", "argv", p.argv, "exec_ms", p.res.Duration.Milliseconds())
			return
		}
		detail := redact.String(tail(p.res.Stderr, 8), p.c.Secrets...)
		var ee *exec.ExitError
		if errors.As(err, &ee) && detail != "" {
			p.err = fmt.Errorf("%s: %s: %s", p.argv, ee.ProcessState, detail)
			return
		}
		p.err = fmt.Errorf("%s: %w", p.argv, err)
	})
	return p.res, p.err
}

// capped is a buffer that keeps the first max bytes written to it.
type capped struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (c *capped) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf...)
}
