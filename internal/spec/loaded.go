package spec

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Loaded is a config read once and passed along: the bytes as they came (what is stored
// as the pending or the applied config), the decoded ComputeConfig, and its spec
// resolved and validated. A Loaded always has a spec.
type Loaded struct {
	Raw    []byte
	Config *ComputeConfig
	Spec   *Parsed
}

// ErrNoSpec is the error of a config without a spec where one is required.
var ErrNoSpec = errors.New("invalid config: no spec")

// Load decodes and validates a config that must carry a spec. Its errors say which part
// is wrong: "invalid config: ..." (the JSON), ErrNoSpec, or "invalid spec: ..." (the
// validation, a *ValidationError inside).
func Load(raw []byte) (*Loaded, error) {
	cc, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	return FromConfig(raw, cc)
}

// FromConfig completes a config decoded already (raw is what cc was decoded from): it
// requires a spec and validates it, with Load's errors.
func FromConfig(raw []byte, cc *ComputeConfig) (*Loaded, error) {
	if cc == nil || cc.Spec == nil {
		return nil, ErrNoSpec
	}
	p, err := Parse(cc.Spec)
	if err != nil {
		return nil, fmt.Errorf("invalid spec: %w", err)
	}
	return &Loaded{Raw: raw, Config: cc, Spec: p}, nil
}

// Encode completes a config that was decoded from elsewhere (the control plane's
// answer): its bytes are cc encoded again, which parses back to the same config.
func Encode(cc *ComputeConfig) (*Loaded, error) {
	if cc == nil || cc.Spec == nil {
		return nil, ErrNoSpec
	}
	raw, err := json.Marshal(cc)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return FromConfig(raw, cc)
}

// ComputeSpec is the spec of the config (never nil).
func (l *Loaded) ComputeSpec() *ComputeSpec { return l.Config.Spec }
