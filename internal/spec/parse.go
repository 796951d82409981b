package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ParseConfig parses a ComputeConfig: the config file, the control plane's answer or the
// body of POST /configure. compute_ctl_config (with its jwks) is required; spec may be
// absent or null (a pooled compute waiting for /configure). Unknown fields are ignored.
// Errors name the offending field, e.g. `spec: cluster.roles[2]: missing field "name"`.
func ParseConfig(b []byte) (*ComputeConfig, error) {
	top, err := topObject(b, "config")
	if err != nil {
		return nil, err
	}
	cfg := &ComputeConfig{}
	if raw, ok := top["spec"]; ok && !isNull(raw) {
		s, err := parseSpec(raw)
		if err != nil {
			return nil, err
		}
		cfg.Spec = s
	}
	raw, ok := top["compute_ctl_config"]
	switch {
	case !ok:
		return nil, errors.New(`config: missing field "compute_ctl_config"`)
	case isNull(raw):
		return nil, errors.New(`config: field "compute_ctl_config" must not be null`)
	}
	cc, err := parseCtlConfig(raw)
	if err != nil {
		return nil, err
	}
	cfg.ComputeCtlConfig = cc
	return cfg, nil
}

// ParseSpec parses a bare ComputeSpec (the form of Neon's cluster_spec.json fixtures).
// Defaults are filled in: mode Primary, reconfigure_concurrency 1, audit_log_level
// Disabled, features []. It checks the JSON shape only; Parse resolves and validates.
func ParseSpec(b []byte) (*ComputeSpec, error) {
	if _, err := topObject(b, "spec"); err != nil {
		return nil, err
	}
	return parseSpec(b)
}

func topObject(b []byte, what string) (map[string]json.RawMessage, error) {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, fmt.Errorf("%s: invalid JSON: %w", what, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil || top == nil {
		return nil, fmt.Errorf("%s: want a JSON object", what)
	}
	return top, nil
}

func parseCtlConfig(raw json.RawMessage) (*ComputeCtlConfig, error) {
	var cc ComputeCtlConfig
	if err := json.Unmarshal(raw, &cc); err != nil {
		return nil, decodeError("config: compute_ctl_config", err)
	}
	c := &checker{}
	obj := c.object(raw, "compute_ctl_config")
	if obj != nil {
		c.require(obj, "compute_ctl_config", "jwks")
		if j, ok := obj["jwks"]; ok && !isNull(j) {
			if jw := c.object(j, "compute_ctl_config.jwks"); jw != nil {
				c.require(jw, "compute_ctl_config.jwks", "keys")
				if k, ok := jw["keys"]; ok && !isNull(k) && !isArray(k) {
					c.fail("compute_ctl_config.jwks", `field "keys" must be an array`)
				}
			}
		}
		c.tls(obj, "compute_ctl_config")
	}
	if err := c.err("config"); err != nil {
		return nil, err
	}
	// Keep the key set in the canonical form json.Marshal writes, so that a parsed
	// config re-marshals and re-parses to an equal value.
	var compact, escaped bytes.Buffer
	if err := json.Compact(&compact, cc.JWKS); err != nil {
		return nil, fmt.Errorf("config: compute_ctl_config.jwks: %w", err)
	}
	json.HTMLEscape(&escaped, compact.Bytes())
	cc.JWKS = json.RawMessage(escaped.Bytes())
	return &cc, nil
}

func parseSpec(raw json.RawMessage) (*ComputeSpec, error) {
	c := &checker{}
	top := c.object(raw, "")
	if top == nil {
		var s ComputeSpec
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, decodeError("spec", err)
		}
		return nil, c.err("spec")
	}
	// Errors of custom decoders carry no field path; decode those fields alone first.
	if v, ok := top["pgbouncer_settings"]; ok {
		var m OrderedStringMap
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("spec: pgbouncer_settings: %w", err)
		}
	}
	var s ComputeSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, decodeError("spec", err)
	}
	c.require(top, "", "format_version", "cluster", "suspend_timeout_seconds")
	if cl := c.object(top["cluster"], "cluster"); cl != nil {
		c.require(cl, "cluster", "roles", "databases")
		c.eachObject(cl["roles"], "cluster.roles", func(o map[string]json.RawMessage, p string) {
			c.require(o, p, "name")
			c.options(o["options"], p+".options")
		})
		c.eachObject(cl["databases"], "cluster.databases", func(o map[string]json.RawMessage, p string) {
			c.require(o, p, "name", "owner")
			c.options(o["options"], p+".options")
		})
		c.options(cl["settings"], "cluster.settings")
	}
	c.eachObject(top["delta_operations"], "delta_operations", func(o map[string]json.RawMessage, p string) {
		c.require(o, p, "action", "name")
	})
	if re := c.object(top["remote_extensions"], "remote_extensions"); re != nil {
		c.require(re, "remote_extensions", "library_index", "extension_data")
		if ed := c.object(re["extension_data"], "remote_extensions.extension_data"); ed != nil {
			for name, v := range ed {
				p := "remote_extensions.extension_data." + name
				if o := c.object(v, p); o != nil {
					c.require(o, p, "control_data", "archive_path")
				} else if isNull(v) {
					c.fail(p, "must not be null")
				}
			}
		}
	}
	if lp := c.object(top["local_proxy_config"], "local_proxy_config"); lp != nil {
		c.eachObject(lp["jwks"], "local_proxy_config.jwks", func(o map[string]json.RawMessage, p string) {
			c.require(o, p, "id", "role_names", "jwks_url", "provider_name")
		})
		c.tls(lp, "local_proxy_config")
	}
	if s.ReconfigureConcurrency < 0 {
		c.fail("", `field "reconfigure_concurrency" must not be negative`)
	}
	if s.OffloadLFCIntervalSeconds != nil && *s.OffloadLFCIntervalSeconds == 0 {
		c.fail("", `field "offload_lfc_interval_seconds" must not be zero`)
	}
	if err := c.err("spec"); err != nil {
		return nil, err
	}

	// Defaults of Neon's serde attributes.
	if v, ok := top["reconfigure_concurrency"]; !ok || isNull(v) {
		s.ReconfigureConcurrency = 1
	}
	if s.Features == nil {
		s.Features = []string{}
	}
	if len(s.SafekeeperConnstrings) == 0 {
		s.SafekeeperConnstrings = nil
	}
	s.AuditLogLevel = s.AuditLogLevel.Level()
	return &s, nil
}

// decodeError turns encoding/json errors into messages that name the field.
func decodeError(prefix string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Errorf("%s: %s: cannot use a JSON %s as %s", prefix, field, te.Value, goTypeName(te.Type.String()))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: invalid JSON at offset %d: %w", prefix, se.Offset, err)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

func goTypeName(t string) string {
	t = strings.TrimPrefix(t, "*")
	switch {
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "spec."):
		return "an object"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "a number (" + t + ")"
	case t == "bool":
		return "a boolean"
	case t == "string":
		return "a string"
	}
	return t
}

// checker collects shape errors (missing required fields and the like) with their
// JSON paths.
type checker struct {
	errs []string
}

func (c *checker) fail(path, msg string) {
	if path != "" {
		msg = path + ": " + msg
	}
	c.errs = append(c.errs, msg)
}

func (c *checker) err(prefix string) error {
	if len(c.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s", prefix, strings.Join(c.errs, "; "))
}

// object decodes raw as an object; it returns nil (without an error) for an absent or
// null value, and records an error for anything else that is not an object.
func (c *checker) object(raw json.RawMessage, path string) map[string]json.RawMessage {
	if raw == nil || isNull(raw) {
		return nil
	}
	var o map[string]json.RawMessage
	if err := json.Unmarshal(raw, &o); err != nil || o == nil {
		c.fail(path, "want an object")
		return nil
	}
	return o
}

// require records every key that is absent or null.
func (c *checker) require(o map[string]json.RawMessage, path string, keys ...string) {
	for _, k := range keys {
		v, ok := o[k]
		switch {
		case !ok:
			c.fail(path, fmt.Sprintf("missing field %q", k))
		case isNull(v):
			c.fail(path, fmt.Sprintf("field %q must not be null", k))
		}
	}
}

// eachObject calls fn for every element of an array of objects (absent/null: nothing).
func (c *checker) eachObject(raw json.RawMessage, path string, fn func(map[string]json.RawMessage, string)) {
	if raw == nil || isNull(raw) {
		return
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		c.fail(path, "want an array")
		return
	}
	for i, e := range elems {
		p := fmt.Sprintf("%s[%d]", path, i)
		if isNull(e) {
			c.fail(p, "want an object, got null")
			continue
		}
		if o := c.object(e, p); o != nil {
			fn(o, p)
		}
	}
}

func (c *checker) options(raw json.RawMessage, path string) {
	c.eachObject(raw, path, func(o map[string]json.RawMessage, p string) {
		c.require(o, p, "name", "vartype")
	})
}

func (c *checker) tls(parent map[string]json.RawMessage, path string) {
	if t := c.object(parent["tls"], path+".tls"); t != nil {
		c.require(t, path+".tls", "key_path", "cert_path")
	}
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func isArray(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '['
}
