package compute

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/state/statetest"
)

const srcConfig = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {
  "roles": [{"name": "alice", "encrypted_password": null, "options": null}],
  "databases": [{"name": "appdb", "owner": "alice", "options": null}]}}}`

const srcNoSpec = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": null}`

// srcBadSpec has a database without a valid name: it decodes, but does not validate.
const srcBadSpec = `{"compute_ctl_config": {"jwks": {"keys": []}}, "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": {
  "roles": [], "databases": [{"name": "", "owner": "alice", "options": null}]}}}`

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func errHas(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one containing %q", err, want)
	}
}

func TestPendingConfigSource(t *testing.T) {
	ctx := context.Background()
	pending := state.Record{Status: state.ConfigurationPending}
	got, err := pendingConfig{path: writeFile(t, srcConfig)}.obtain(ctx, state.Record{Status: state.Empty})
	if got != nil || err != nil {
		t.Errorf("empty record: %v, %v; want no config", got, err)
	}
	got, err = pendingConfig{path: writeFile(t, srcConfig)}.obtain(ctx, pending)
	if err != nil || got == nil || !got.fromConfigure || string(got.Raw) != srcConfig || got.Spec.Storage != spec.StorageStandalone {
		t.Errorf("pending: %+v, %v", got, err)
	}
	_, err = pendingConfig{path: filepath.Join(t.TempDir(), "none")}.obtain(ctx, pending)
	errHas(t, err, "read config from /configure")
	_, err = pendingConfig{path: writeFile(t, "{")}.obtain(ctx, pending)
	errHas(t, err, "invalid config: ")
	_, err = pendingConfig{path: writeFile(t, srcNoSpec)}.obtain(ctx, pending)
	if !errors.Is(err, spec.ErrNoSpec) {
		t.Errorf("pending without spec: %v", err)
	}
}

func TestControlPlaneConfigSource(t *testing.T) {
	ctx := context.Background()
	full, err := spec.ParseConfig([]byte(srcConfig))
	if err != nil {
		t.Fatal(err)
	}
	noSpec, err := spec.ParseConfig([]byte(srcNoSpec))
	if err != nil {
		t.Fatal(err)
	}
	src := func(cc *spec.ComputeConfig, ferr error) controlPlaneConfig {
		return controlPlaneConfig{
			uri:   "http://cp",
			fetch: func(context.Context) (*spec.ComputeConfig, error) { return cc, ferr },
		}
	}
	got, err := src(full, nil).obtain(ctx, state.Record{})
	if err != nil || got == nil || got.fromConfigure || got.Config != full {
		t.Fatalf("with a spec: %+v, %v", got, err)
	}
	if again, err := spec.Load(got.Raw); err != nil || !reflect.DeepEqual(again.Config, full) {
		t.Errorf("stored bytes do not load back to the config: %v", err)
	}
	got, err = src(noSpec, nil).obtain(ctx, state.Record{})
	if got != nil || err != nil {
		t.Errorf("without a spec: %+v, %v; want none", got, err)
	}
	_, err = src(nil, errors.New("503")).obtain(ctx, state.Record{})
	errHas(t, err, "get config from the control plane: 503")
}

func TestFileConfigSource(t *testing.T) {
	ctx := context.Background()
	path := writeFile(t, srcConfig)
	got, err := fileConfig{path: path}.obtain(ctx, state.Record{})
	if err != nil || got == nil || got.fromConfigure || !bytes.Equal(got.Raw, []byte(srcConfig)) || len(got.ComputeSpec().Cluster.Roles) != 1 {
		t.Errorf("file: %+v, %v", got, err)
	}
	for _, p := range []string{filepath.Join(t.TempDir(), "missing.json"), writeFile(t, srcNoSpec)} {
		if got, err := (fileConfig{path: p}).obtain(ctx, state.Record{}); got != nil || err != nil {
			t.Errorf("%s: %+v, %v; want none (wait for /configure)", p, got, err)
		}
	}
	bad := writeFile(t, "{")
	_, err = fileConfig{path: bad}.obtain(ctx, state.Record{})
	errHas(t, err, "invalid config file "+bad)
	_, err = fileConfig{path: writeFile(t, srcBadSpec)}.obtain(ctx, state.Record{})
	errHas(t, err, "invalid spec: ")
	_, err = fileConfig{path: t.TempDir()}.obtain(ctx, state.Record{})
	errHas(t, err, "read config file")
}

func TestWaitForConfigureSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		to      state.Status
		wantErr string
	}{
		{"configure", state.ConfigurationPending, ""},
		{"terminate", state.TerminationPendingFast, "stopped waiting for a spec: status is termination_pending_fast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := state.Open(filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := statetest.Reset(st); err != nil {
				t.Fatal(err)
			}
			pending := filepath.Join(st.Dir(), "config.pending.json")
			wake := make(chan struct{}, 1)
			var said []string
			src := waitForConfigure{store: st, wake: wake, recheck: time.Hour, path: pending,
				status: func(s string) { said = append(said, s) }}
			go func() {
				time.Sleep(20 * time.Millisecond)
				if tc.to == state.ConfigurationPending {
					_ = os.WriteFile(pending, []byte(srcConfig), 0o600)
				}
				_, _ = statetest.Set(st, tc.to, nil)
				wake <- struct{}{}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := src.obtain(ctx, state.Record{Status: state.Empty})
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got == nil || !got.fromConfigure || string(got.Raw) != srcConfig {
				t.Errorf("got %+v, %v", got, err)
			}
			if len(said) != 1 || said[0] != "empty: waiting for POST /configure" {
				t.Errorf("status lines %q", said)
			}
		})
	}
}

// fakeSource records that it was asked and answers as told.
type fakeSource struct {
	asked *[]string
	name  string
	got   *acquired
	err   error
}

func (f fakeSource) obtain(context.Context, state.Record) (*acquired, error) {
	*f.asked = append(*f.asked, f.name)
	return f.got, f.err
}

func TestFirstConfigOrder(t *testing.T) {
	var asked []string
	found := &acquired{}
	got, err := firstConfig(context.Background(), state.Record{}, []configSource{
		fakeSource{asked: &asked, name: "a"},
		fakeSource{asked: &asked, name: "b", got: found},
		fakeSource{asked: &asked, name: "c", err: errors.New("not asked")},
	})
	if got != found || err != nil || strings.Join(asked, ",") != "a,b" {
		t.Errorf("got %v, %v after asking %v", got, err, asked)
	}
	asked = nil
	_, err = firstConfig(context.Background(), state.Record{}, []configSource{
		fakeSource{asked: &asked, name: "a", err: errors.New("boom")},
		fakeSource{asked: &asked, name: "b", got: found},
	})
	if err == nil || err.Error() != "boom" || strings.Join(asked, ",") != "a" {
		t.Errorf("an error must end the search: %v after asking %v", err, asked)
	}
}

func TestConfigSourcesOrder(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	d := &Deps{Store: st}
	kinds := func(srcs []configSource) string {
		var out []string
		for _, s := range srcs {
			out = append(out, reflect.TypeOf(s).Name())
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name string
		cfg  Settings
		want string
	}{
		{"control plane wins over the file", Settings{StateDir: st.Dir(), ControlPlaneURI: "http://cp", ConfigFile: "/etc/compute/config.json"},
			"pendingConfig,controlPlaneConfig,waitForConfigure"},
		{"file", Settings{StateDir: st.Dir(), ConfigFile: "/etc/compute/config.json"}, "pendingConfig,fileConfig,waitForConfigure"},
		{"neither", Settings{StateDir: st.Dir()}, "pendingConfig,waitForConfigure"},
	} {
		if got := kinds(configSources(tc.cfg, d, nil, nil)); got != tc.want {
			t.Errorf("%s: sources %s, want %s", tc.name, got, tc.want)
		}
	}
}
