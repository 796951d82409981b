package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Lsn is a PostgreSQL log sequence number. On the wire it is the string "HI/LO" in
// upper-case hex without zero padding (e.g. "0/169AD58"); JSON numbers are rejected, as
// in Neon.
type Lsn uint64

// String formats the LSN as "HI/LO".
func (l Lsn) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xffffffff)
}

// ParseLsn parses "HI/LO" (hex, either case, surrounding spaces ignored).
func ParseLsn(s string) (Lsn, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || strings.Contains(lo, "/") {
		return 0, fmt.Errorf("invalid LSN %q: want HI/LO in hex", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q: want HI/LO in hex", s)
	}
	return Lsn(h<<32 | l), nil
}

// MarshalJSON writes the LSN as a JSON string.
func (l Lsn) MarshalJSON() ([]byte, error) { return json.Marshal(l.String()) }

// UnmarshalJSON accepts only a JSON string.
func (l *Lsn) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) == 0 || b[0] != '"' {
		return fmt.Errorf("invalid LSN %s: want a string \"HI/LO\"", truncate(b))
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("invalid LSN: %w", err)
	}
	v, err := ParseLsn(s)
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// ModeType is the kind of a compute mode as Neon's ComputeMode::to_type_str spells it:
// "primary", "static" or "replica" (the value of neon.compute_mode, and the mode in the
// state record).
type ModeType string

// The three mode types.
const (
	ModeTypePrimary ModeType = "primary"
	ModeTypeStatic  ModeType = "static"
	ModeTypeReplica ModeType = "replica"
)

type modeKind uint8

const (
	kindPrimary modeKind = iota
	kindStatic
	kindReplica
)

// ComputeMode is Neon's externally tagged enum: "Primary", {"Static":"<lsn>"} or
// "Replica". The zero value is Primary (Neon's default when the field is absent); null
// also means Primary.
type ComputeMode struct {
	kind modeKind
	lsn  Lsn
}

// Primary, Replica and Static build the three modes.
var (
	Primary = ComputeMode{kind: kindPrimary}
	Replica = ComputeMode{kind: kindReplica}
)

// Static is a read-only compute pinned at lsn.
func Static(lsn Lsn) ComputeMode { return ComputeMode{kind: kindStatic, lsn: lsn} }

// Type is "primary", "static" or "replica" (the value of neon.compute_mode).
func (m ComputeMode) Type() ModeType {
	switch m.kind {
	case kindStatic:
		return ModeTypeStatic
	case kindReplica:
		return ModeTypeReplica
	default:
		return ModeTypePrimary
	}
}

// IsPrimary reports whether the compute is read-write.
func (m ComputeMode) IsPrimary() bool { return m.kind == kindPrimary }

// StaticLSN returns the LSN of a Static compute; ok is false for other modes.
func (m ComputeMode) StaticLSN() (lsn Lsn, ok bool) {
	return m.lsn, m.kind == kindStatic
}

// String is the type string, with the LSN for Static ("static@0/16B3748").
func (m ComputeMode) String() string {
	if m.kind == kindStatic {
		return string(ModeTypeStatic) + "@" + m.lsn.String()
	}
	return string(m.Type())
}

// MarshalJSON writes Neon's externally tagged form.
func (m ComputeMode) MarshalJSON() ([]byte, error) {
	switch m.kind {
	case kindStatic:
		return json.Marshal(map[string]Lsn{"Static": m.lsn})
	case kindReplica:
		return []byte(`"Replica"`), nil
	default:
		return []byte(`"Primary"`), nil
	}
}

// UnmarshalJSON reads "Primary", "Replica", {"Static":"<lsn>"} (and, as serde does,
// {"Primary":null} / {"Replica":null}); null is Primary.
func (m *ComputeMode) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*m = Primary
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("mode: %w", err)
		}
		switch s {
		case "Primary":
			*m = Primary
		case "Replica":
			*m = Replica
		case "Static":
			return errors.New(`mode: "Static" needs an LSN: {"Static":"<lsn>"}`)
		default:
			return fmt.Errorf("mode: unknown variant %q, expected Primary, Static or Replica", s)
		}
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("mode: want a string or a one-key object, got %s", truncate(b))
	}
	if len(obj) != 1 {
		return fmt.Errorf("mode: want an object with exactly one key, got %d", len(obj))
	}
	for k, v := range obj {
		switch k {
		case "Static":
			var l Lsn
			if err := l.UnmarshalJSON(bytes.TrimSpace(v)); err != nil {
				return fmt.Errorf("mode: Static: %w", err)
			}
			*m = Static(l)
		case "Primary", "Replica":
			if string(bytes.TrimSpace(v)) != "null" {
				return fmt.Errorf("mode: %s takes no value", k)
			}
			if k == "Primary" {
				*m = Primary
			} else {
				*m = Replica
			}
		default:
			return fmt.Errorf("mode: unknown variant %q, expected Primary, Static or Replica", k)
		}
	}
	return nil
}

// ComputeAudit is the pgaudit level, spelled as Neon's PascalCase unit variants.
type ComputeAudit string

// Audit levels. Log is a deprecated alias of Base, Hipaa of Extended.
const (
	AuditDisabled ComputeAudit = "Disabled"
	AuditLog      ComputeAudit = "Log"
	AuditBase     ComputeAudit = "Base"
	AuditHipaa    ComputeAudit = "Hipaa"
	AuditExtended ComputeAudit = "Extended"
	AuditFull     ComputeAudit = "Full"
)

// Compliance reports whether a is a compliance level (Hipaa, Extended, Full): pgaudit
// with pgauditlogtofile, whose files are shipped with rsyslog and cleaned up.
func (a ComputeAudit) Compliance() bool {
	switch a.Level() {
	case AuditHipaa, AuditExtended, AuditFull:
		return true
	}
	return false
}

// AuditLevels lists every level in Neon's declaration order.
var AuditLevels = []ComputeAudit{AuditDisabled, AuditLog, AuditBase, AuditHipaa, AuditExtended, AuditFull}

// Valid reports whether a is a known level.
func (a ComputeAudit) Valid() bool {
	for _, k := range AuditLevels {
		if a == k {
			return true
		}
	}
	return false
}

// Level returns a, or Disabled for the zero value.
func (a ComputeAudit) Level() ComputeAudit {
	if a == "" {
		return AuditDisabled
	}
	return a
}

// MarshalJSON writes the level; the zero value is written as "Disabled".
func (a ComputeAudit) MarshalJSON() ([]byte, error) { return json.Marshal(string(a.Level())) }

// UnmarshalJSON accepts the six PascalCase names; null means Disabled.
func (a *ComputeAudit) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*a = AuditDisabled
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("audit_log_level: want a string, got %s", truncate(b))
	}
	v := ComputeAudit(s)
	if !v.Valid() {
		return fmt.Errorf("audit_log_level: unknown variant %q, expected one of Disabled, Log, Base, Hipaa, Extended, Full", s)
	}
	*a = v
	return nil
}

// StringPair is one entry of an OrderedStringMap.
type StringPair struct {
	Key, Value string
}

// OrderedStringMap is a JSON object of strings that keeps its key order (Neon uses an
// IndexMap for pgbouncer_settings). A repeated key keeps its first position and takes
// the last value, as IndexMap does.
type OrderedStringMap []StringPair

// Get returns the value of key.
func (m OrderedStringMap) Get(key string) (string, bool) {
	for _, p := range m {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// MarshalJSON writes the entries in order.
func (m OrderedStringMap) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, p := range m {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, err := json.Marshal(p.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(p.Value)
		if err != nil {
			return nil, err
		}
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// UnmarshalJSON reads a JSON object whose values are all strings.
func (m *OrderedStringMap) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*m = nil
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("want an object of strings: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object of strings, got %s", truncate(b))
	}
	out := OrderedStringMap{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("want an object of strings: %w", err)
		}
		key, _ := kt.(string)
		vt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("want an object of strings: %w", err)
		}
		val, ok := vt.(string)
		if !ok {
			return fmt.Errorf("value of %q must be a string", key)
		}
		replaced := false
		for i := range out {
			if out[i].Key == key {
				out[i].Value = val
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, StringPair{Key: key, Value: val})
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("want an object of strings: %w", err)
	}
	*m = out
	return nil
}

// truncate shortens raw JSON for an error message.
func truncate(b []byte) string {
	const max = 40
	s := string(b)
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
