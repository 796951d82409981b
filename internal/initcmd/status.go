package initcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/statusview"
)

// StatusOptions are the flags of `compute-init status`.
type StatusOptions struct {
	// Wait, if set, waits until the status is this one (or failed/terminated).
	Wait string
	// Timeout bounds the wait.
	Timeout time.Duration
	// Full prints the whole state record instead of the /status view.
	Full bool
}

// statusRecheck is how often --wait re-reads the state between wake-ups.
const statusRecheck = 200 * time.Millisecond

// Status prints the compute status of the state directory to out as GET /status shows it
// (or the whole record), without a token. With Wait it first waits, woken by the D-Bus
// status signal when the bus is there, and fails when the status reached is not the one
// waited for.
func Status(ctx context.Context, stateDir string, o StatusOptions, out io.Writer) error {
	return production.status(ctx, stateDir, o, out)
}

func (e env) status(ctx context.Context, stateDir string, o StatusOptions, out io.Writer) error {
	store, err := state.Open(stateDir)
	if err != nil {
		return err
	}
	rec, err := store.Load()
	if o.Wait != "" {
		want := state.Status(o.Wait)
		if !want.Valid() {
			return fmt.Errorf("--wait: unknown status %q", o.Wait)
		}
		var wake <-chan struct{}
		if conn, berr := e.connectBus(ctx); berr == nil {
			defer conn.Close()
			ch, cancel := conn.Subscribe()
			defer cancel()
			wake = ch
		}
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		rec, err = store.Wait(wctx, wake, statusRecheck, func(r state.Record) bool {
			return r.Status == want || r.Status == state.Failed || r.Status == state.Terminated
		})
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("status is still %s after %s", rec.Status, o.Timeout)
		}
	}
	if errors.Is(err, state.ErrNoState) {
		rec = state.Record{Status: state.Empty}
	} else if err != nil {
		return err
	}
	var v any = statusview.Of(rec)
	if o.Full {
		v = rec
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(out, string(b))
	if o.Wait != "" && rec.Status != state.Status(o.Wait) {
		return fmt.Errorf("status is %s, not %s", rec.Status, o.Wait)
	}
	return nil
}
