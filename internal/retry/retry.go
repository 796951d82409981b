// Package retry runs an operation again, after a pause, when it fails with an error worth
// another try: a bounded number of attempts, a constant or growing pause, the context
// honoured during every pause.
package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Policy says how often to try and how long to pause in between.
type Policy struct {
	// Attempts bounds the calls; <= 0 means no bound (until success, a permanent error or
	// the end of the context).
	Attempts int
	// Delay is the pause after the first failure.
	Delay time.Duration
	// Factor multiplies the pause after each further failure; <= 1 keeps it constant.
	Factor float64
	// MaxDelay caps the pause; 0 means no cap.
	MaxDelay time.Duration
	// Retryable tells whether a failure is worth another attempt; nil means every error
	// is (except those marked with Permanent).
	Retryable func(error) bool
}

// Backoff yields the pauses of a policy one after the other. Loops that are not "call
// until it works" (a renewal loop that backs off on errors and starts over after a
// success) use it directly.
type Backoff struct {
	p    Policy
	next time.Duration
}

// NewBackoff returns a Backoff at the policy's first pause.
func NewBackoff(p Policy) *Backoff { return &Backoff{p: p, next: p.Delay} }

// Next returns the current pause and moves to the following one.
func (b *Backoff) Next() time.Duration {
	d := b.next
	if b.p.Factor > 1 {
		b.next = time.Duration(float64(b.next) * b.p.Factor)
	}
	if b.p.MaxDelay > 0 {
		b.next = min(b.next, b.p.MaxDelay)
		d = min(d, b.p.MaxDelay)
	}
	return d
}

// Reset goes back to the first pause.
func (b *Backoff) Reset() { b.next = b.p.Delay }

// permanent marks an error that Do returns at once.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth another attempt, whatever the policy's Retryable
// says: Do returns it at once, without the mark (an error that wraps a marked one is
// returned as it is). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err: err}
}

// Error is Do's failure after retryable errors: the attempts ran out, or the context
// ended. It unwraps to both the context's error (when there is one) and the last error.
type Error struct {
	// Attempts is how many calls were made.
	Attempts int
	// Last is the error of the last call.
	Last error
	// Ctx is the context's error when the context ended, else nil.
	Ctx error
}

func (e *Error) Error() string {
	if e.Ctx != nil {
		return fmt.Sprintf("%v (last error: %v)", e.Ctx, e.Last)
	}
	return fmt.Sprintf("%d attempts failed: %v", e.Attempts, e.Last)
}

// Unwrap returns the context's error (if any) and the last error.
func (e *Error) Unwrap() []error {
	if e.Ctx != nil {
		return []error{e.Ctx, e.Last}
	}
	return []error{e.Last}
}

// Do calls op (attempt counts from 1) until it returns nil, returns an error that is not
// retryable (given back as it is, a Permanent mark removed), or p.Attempts calls have
// failed; between two calls it pauses as p says. When the attempts run out, or ctx has
// ended after a failed call or ends during a pause, it returns an *Error.
func Do(ctx context.Context, p Policy, op func(ctx context.Context, attempt int) error) error {
	b := NewBackoff(p)
	for n := 1; ; n++ {
		err := op(ctx, n)
		if err == nil {
			return nil
		}
		if perm, ok := err.(*permanent); ok {
			return perm.err
		}
		if errors.As(err, new(*permanent)) {
			return err
		}
		if p.Retryable != nil && !p.Retryable(err) {
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return &Error{Attempts: n, Last: err, Ctx: ctxErr}
		}
		if p.Attempts > 0 && n >= p.Attempts {
			return &Error{Attempts: n, Last: err}
		}
		if ctxErr := Sleep(ctx, b.Next()); ctxErr != nil {
			return &Error{Attempts: n, Last: err, Ctx: ctxErr}
		}
	}
}

// Sleep pauses for d, or returns the context's error as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
