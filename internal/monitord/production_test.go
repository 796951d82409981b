package monitord

import (
	"io"
	"log/slog"
	"testing"

	"github.com/computetools/compute-tools/internal/state"
)

func TestAnnouncesOnlyStatusChanges(t *testing.T) {
	var got []string
	on := announceStatusChanges(state.Running, func(status string, _ uint64) error {
		got = append(got, status)
		return nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// The monitor's own writes (last_active, downtime) keep the status: no signal.
	on(state.Record{Status: state.Running, Seq: 5})
	on(state.Record{Status: state.Running, Seq: 6})
	if len(got) != 0 {
		t.Fatalf("signals for writes that kept the status: %v", got)
	}
	on(state.Record{Status: state.ConfigurationPending, Seq: 7})
	on(state.Record{Status: state.ConfigurationPending, Seq: 8})
	on(state.Record{Status: state.Running, Seq: 9})
	if len(got) != 2 || got[0] != string(state.ConfigurationPending) || got[1] != string(state.Running) {
		t.Fatalf("signals %v, want one per status change", got)
	}
}
