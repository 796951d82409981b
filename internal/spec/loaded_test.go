package spec

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	raw := readTestdata(t, "config_neon_primary.json")
	l, err := Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Raw, raw) || l.Spec.Storage != StorageNeon || l.ComputeSpec() != l.Config.Spec || l.Spec.Spec != l.Config.Spec {
		t.Errorf("loaded %+v", l)
	}
}

func TestLoadErrors(t *testing.T) {
	badSpec := edit(t, string(readTestdata(t, "config_standalone.json")), func(m map[string]any) {
		obj(m, "spec", "cluster")["databases"] = []map[string]any{{"name": "", "owner": "x"}}
	})
	for _, tc := range []struct {
		name   string
		raw    []byte
		prefix string
		is     error
	}{
		{"malformed", []byte(`{"spec": {`), "invalid config: ", nil},
		{"no compute_ctl_config", []byte(`{"spec": null}`), "invalid config: ", nil},
		{"no spec", readTestdata(t, "config_empty.json"), "invalid config: no spec", ErrNoSpec},
		{"invalid spec", badSpec, "invalid spec: ", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Load(tc.raw)
			if err == nil || l != nil {
				t.Fatalf("Load = %v, %v", l, err)
			}
			if !strings.HasPrefix(err.Error(), tc.prefix) {
				t.Errorf("error %q, want prefix %q", err, tc.prefix)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
	var ve *ValidationError
	if _, err := Load(badSpec); !errors.As(err, &ve) {
		t.Errorf("invalid spec: %v carries no *ValidationError", err)
	}
}

func TestEncodeRoundTrips(t *testing.T) {
	cc, err := ParseConfig(readTestdata(t, "config_static.json"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Encode(cc)
	if err != nil {
		t.Fatal(err)
	}
	if l.Config != cc {
		t.Error("Encode did not keep the decoded config")
	}
	again, err := Load(l.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Config, cc) || !reflect.DeepEqual(again.Spec, l.Spec) {
		t.Errorf("encoded config does not load back to itself:\n%+v\n%+v", again.Config, cc)
	}
	if _, err := Encode(&ComputeConfig{}); !errors.Is(err, ErrNoSpec) {
		t.Errorf("Encode without spec: %v", err)
	}
	if _, err := FromConfig(nil, nil); !errors.Is(err, ErrNoSpec) {
		t.Errorf("FromConfig(nil): %v", err)
	}
}
