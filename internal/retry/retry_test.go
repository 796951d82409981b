package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

var errBusy = errors.New("busy")

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want []float64 // milliseconds
	}{
		{"constant", Policy{Delay: 250 * time.Millisecond}, []float64{250, 250, 250}},
		{"factor 1 is constant", Policy{Delay: time.Second, Factor: 1}, []float64{1000, 1000}},
		{"x1.5", Policy{Delay: 500 * time.Millisecond, Factor: 1.5}, []float64{500, 750, 1125, 1687.5}},
		{"x1.5 capped", Policy{Delay: 20 * time.Second, Factor: 1.5, MaxDelay: time.Minute}, []float64{20000, 30000, 45000, 60000, 60000}},
		{"delay above the cap", Policy{Delay: 2 * time.Minute, MaxDelay: time.Minute}, []float64{60000, 60000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBackoff(tc.p)
			for i, ms := range tc.want {
				want := time.Duration(ms * float64(time.Millisecond))
				if got := b.Next(); got != want {
					t.Fatalf("pause %d = %v, want %v", i+1, got, want)
				}
			}
			b.Reset()
			if got, want := b.Next(), time.Duration(tc.want[0]*float64(time.Millisecond)); got != want {
				t.Errorf("after Reset: %v, want %v", got, want)
			}
		})
	}
}

// The pauses of x1.5 match the integer arithmetic d*3/2 the loops used before.
func TestBackoffMatchesIntegerGrowth(t *testing.T) {
	b := NewBackoff(Policy{Delay: 500 * time.Millisecond, Factor: 1.5})
	d := 500 * time.Millisecond
	for i := range 10 {
		if got := b.Next(); got != d {
			t.Fatalf("pause %d = %v, want %v", i+1, got, d)
		}
		d = d * 3 / 2
	}
}

// op fails with the given errors in turn, then succeeds.
type script struct {
	errs  []error
	calls int
	at    []time.Time
}

func (s *script) op(ctx context.Context, attempt int) error {
	s.calls++
	s.at = append(s.at, time.Now())
	if attempt != s.calls {
		return Permanent(fmt.Errorf("attempt %d on call %d", attempt, s.calls))
	}
	if s.calls <= len(s.errs) {
		return s.errs[s.calls-1]
	}
	return nil
}

func TestDo(t *testing.T) {
	perm := errors.New("forbidden")
	for _, tc := range []struct {
		name      string
		p         Policy
		errs      []error
		calls     int
		wantErr   string
		exhausted bool
	}{
		{"first try", Policy{Attempts: 3}, nil, 1, "", false},
		{"success on the last attempt", Policy{Attempts: 3}, []error{errBusy, errBusy}, 3, "", false},
		{"attempts run out", Policy{Attempts: 3}, []error{errBusy, errBusy, errBusy, errBusy}, 3, "3 attempts failed: busy", true},
		{"one attempt", Policy{Attempts: 1}, []error{errBusy}, 1, "1 attempts failed: busy", true},
		{"no bound", Policy{}, []error{errBusy, errBusy, errBusy, errBusy, errBusy}, 6, "", false},
		{"predicate refuses", Policy{Attempts: 5, Retryable: func(err error) bool { return err != perm }}, []error{errBusy, perm, errBusy}, 2, "forbidden", false},
		{"permanent mark", Policy{Attempts: 5}, []error{errBusy, Permanent(perm)}, 2, "forbidden", false},
		{"wrapped permanent mark", Policy{Attempts: 5}, []error{fmt.Errorf("x: %w", Permanent(perm))}, 1, "x: forbidden", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &script{errs: tc.errs}
			tc.p.Delay = time.Millisecond
			err := Do(context.Background(), tc.p, s.op)
			if s.calls != tc.calls {
				t.Errorf("%d calls, want %d", s.calls, tc.calls)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Do = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("Do = %v, want %q", err, tc.wantErr)
			}
			var re *Error
			if got := errors.As(err, &re); got != tc.exhausted {
				t.Errorf("*Error: %v, want %v", got, tc.exhausted)
			}
			if errors.Is(err, perm) != (tc.name != "attempts run out" && tc.name != "one attempt") {
				t.Errorf("errors.Is(perm) wrong for %v", err)
			}
			if _, marked := err.(*permanent); marked {
				t.Error("the permanent mark leaked out")
			}
		})
	}
}

func TestDoPauses(t *testing.T) {
	s := &script{errs: []error{errBusy, errBusy, errBusy}}
	start := time.Now()
	if err := Do(context.Background(), Policy{Attempts: 4, Delay: 10 * time.Millisecond, Factor: 2}, s.op); err != nil {
		t.Fatal(err)
	}
	// Pauses of 10, 20 and 40 ms: at least 70 ms in all, and none after the success.
	if el := time.Since(start); el < 70*time.Millisecond {
		t.Errorf("took %v, want at least 70ms", el)
	}
	if gap := s.at[3].Sub(s.at[2]); gap < 40*time.Millisecond {
		t.Errorf("third pause %v, want at least 40ms", gap)
	}
}

func TestDoNoPauseAfterTheLastAttempt(t *testing.T) {
	s := &script{errs: []error{errBusy}}
	start := time.Now()
	err := Do(context.Background(), Policy{Attempts: 1, Delay: time.Hour}, s.op)
	if err == nil || time.Since(start) > time.Minute {
		t.Fatalf("Do = %v after %v", err, time.Since(start))
	}
}

func TestDoContext(t *testing.T) {
	t.Run("ends during a pause", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		s := &script{errs: []error{errBusy, errBusy}}
		err := Do(ctx, Policy{Attempts: 3, Delay: time.Hour}, s.op)
		var re *Error
		if !errors.As(err, &re) || re.Attempts != 1 || s.calls != 1 {
			t.Fatalf("Do = %#v after %d calls", err, s.calls)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errBusy) {
			t.Errorf("%v does not unwrap to both the context's and the last error", err)
		}
		if err.Error() != "context deadline exceeded (last error: busy)" {
			t.Errorf("text %q", err)
		}
	})
	t.Run("ended during the call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Do(ctx, Policy{Attempts: 3}, func(ctx context.Context, _ int) error {
			calls++
			cancel()
			return io.ErrUnexpectedEOF
		})
		if calls != 1 || !errors.Is(err, context.Canceled) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Do = %v after %d calls", err, calls)
		}
	})
	t.Run("permanent wins over the context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := Do(ctx, Policy{Attempts: 3}, func(ctx context.Context, _ int) error {
			cancel()
			return Permanent(io.EOF)
		})
		if err != io.EOF {
			t.Fatalf("Do = %v", err)
		}
	})
}

func TestPermanentNil(t *testing.T) {
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}
