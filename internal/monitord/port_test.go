package monitord

import (
	"io"
	"log/slog"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
	"github.com/computetools/compute-tools/internal/spec"
)

func loadedWithPort(t *testing.T, port string) *spec.Loaded {
	t.Helper()
	l, err := spec.Load([]byte(`{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {"roles": [], "databases": [],
	  "settings": [{"name": "port", "value": "` + port + `", "vartype": "integer"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestForSpecFollowsThePort: with the packaged default connection string, the monitor's
// connections go to the spec's port, as compute-init's do; an operator's connection
// string is kept (compute-init fails such a compute with both ports named).
func TestForSpecFollowsThePort(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := &runner{s: Settings{Connstr: paths.DefaultConnstr}, log: log, connPort: 55432, connUser: "cloud_admin", ownConnect: true}
	got := m.forSpec(loadedWithPort(t, "5432"))
	if got.s.Connstr != paths.ConnstrWithPort(5432) || got.d.Connect == nil {
		t.Errorf("connstr %q (connector %v), want port 5432", got.s.Connstr, got.d.Connect != nil)
	}
	if m.s.Connstr != paths.DefaultConnstr {
		t.Error("forSpec changed the runner itself")
	}
	if same := m.forSpec(loadedWithPort(t, "55432")); same != m {
		t.Error("a spec on the same port changed the runner")
	}
	if same := m.forSpec(nil); same != m {
		t.Error("no applied config changed the runner")
	}
	op := &runner{s: Settings{Connstr: "postgresql://cloud_admin@localhost:6000/postgres?host=/run/compute-postgres"}, log: log, connPort: 6000, ownConnect: true}
	if same := op.forSpec(loadedWithPort(t, "5432")); same != op {
		t.Error("an operator's connection string was changed")
	}
}
