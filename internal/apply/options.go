package apply

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
)

// Spec options are never spliced into SQL as given: each option name must be on an
// allow-list, and its value is rendered by kind (literal, identifier, integer, boolean,
// keyword) after validation.

type valueKind int

const (
	kindFlag    valueKind = iota // no value: the keyword alone
	kindLiteral                  // '…'
	kindIdent                    // "…"
	kindInt                      // validated int32
	kindOID                      // validated positive uint32
	kindBool                     // true/false
	kindKeyword                  // one of a fixed set, lower-cased
)

type optionDef struct {
	sql      string // the keyword(s) as written in SQL
	kind     valueKind
	attr     string   // role attribute the flag sets (to detect conflicts and override defaults)
	keywords []string // for kindKeyword
}

// roleOptionDefs are the role attributes a spec may set, keyed by normalized name.
var roleOptionDefs = map[string]optionDef{
	"SUPERUSER":        {sql: "SUPERUSER", attr: "superuser"},
	"NOSUPERUSER":      {sql: "NOSUPERUSER", attr: "superuser"},
	"CREATEDB":         {sql: "CREATEDB", attr: "createdb"},
	"NOCREATEDB":       {sql: "NOCREATEDB", attr: "createdb"},
	"CREATEROLE":       {sql: "CREATEROLE", attr: "createrole"},
	"NOCREATEROLE":     {sql: "NOCREATEROLE", attr: "createrole"},
	"INHERIT":          {sql: "INHERIT", attr: "inherit"},
	"NOINHERIT":        {sql: "NOINHERIT", attr: "inherit"},
	"LOGIN":            {sql: "LOGIN", attr: "login"},
	"NOLOGIN":          {sql: "NOLOGIN", attr: "login"},
	"REPLICATION":      {sql: "REPLICATION", attr: "replication"},
	"NOREPLICATION":    {sql: "NOREPLICATION", attr: "replication"},
	"BYPASSRLS":        {sql: "BYPASSRLS", attr: "bypassrls"},
	"NOBYPASSRLS":      {sql: "NOBYPASSRLS", attr: "bypassrls"},
	"CONNECTION_LIMIT": {sql: "CONNECTION LIMIT", kind: kindInt, attr: "connlimit"},
	"VALID_UNTIL":      {sql: "VALID UNTIL", kind: kindLiteral, attr: "validuntil"},
}

// databaseOptionDefs are the CREATE DATABASE options a spec may set. OWNER is not one:
// the owner has its own field.
var databaseOptionDefs = map[string]optionDef{
	"TEMPLATE":          {sql: "TEMPLATE", kind: kindIdent},
	"ENCODING":          {sql: "ENCODING", kind: kindLiteral},
	"LOCALE":            {sql: "LOCALE", kind: kindLiteral},
	"LC_COLLATE":        {sql: "LC_COLLATE", kind: kindLiteral},
	"LC_CTYPE":          {sql: "LC_CTYPE", kind: kindLiteral},
	"ICU_LOCALE":        {sql: "ICU_LOCALE", kind: kindLiteral},
	"LOCALE_PROVIDER":   {sql: "LOCALE_PROVIDER", kind: kindKeyword, keywords: []string{"libc", "icu"}},
	"COLLATION_VERSION": {sql: "COLLATION_VERSION", kind: kindLiteral},
	"TABLESPACE":        {sql: "TABLESPACE", kind: kindIdent},
	"ALLOW_CONNECTIONS": {sql: "ALLOW_CONNECTIONS", kind: kindBool},
	"CONNECTION_LIMIT":  {sql: "CONNECTION LIMIT", kind: kindInt},
	"IS_TEMPLATE":       {sql: "IS_TEMPLATE", kind: kindBool},
	"STRATEGY":          {sql: "STRATEGY", kind: kindKeyword, keywords: []string{"wal_log", "file_copy"}},
	"OID":               {sql: "OID", kind: kindOID},
}

// normalizeOptionName upper-cases name and joins its words with "_", so that
// "connection limit", "CONNECTION LIMIT" and "CONNECTION_LIMIT" are one option.
func normalizeOptionName(name string) string {
	return strings.Join(strings.Fields(strings.ToUpper(strings.ReplaceAll(name, "_", " "))), "_")
}

// renderedOption is one validated option.
type renderedOption struct {
	key  string // normalized name
	attr string
	sql  string // keyword and rendered value
}

// renderOptions validates opts against defs. what names the object for errors
// (`role "x"`).
func renderOptions(what string, opts spec.GenericOptions, defs map[string]optionDef) ([]renderedOption, error) {
	var out []renderedOption
	seen := map[string]string{} // attr or key -> option name that set it
	for _, o := range opts {
		key := normalizeOptionName(o.Name)
		def, ok := defs[key]
		if !ok {
			return nil, fmt.Errorf("%s: option %q is not allowed", what, o.Name)
		}
		slot := def.attr
		if slot == "" {
			slot = key
		}
		if prev, dup := seen[slot]; dup {
			return nil, fmt.Errorf("%s: option %q conflicts with option %q", what, o.Name, prev)
		}
		seen[slot] = o.Name
		sql, err := renderOptionValue(def, o)
		if err != nil {
			return nil, fmt.Errorf("%s: option %s: %w", what, def.sql, err)
		}
		out = append(out, renderedOption{key: key, attr: def.attr, sql: sql})
	}
	return out, nil
}

func renderOptionValue(def optionDef, o spec.GenericOption) (string, error) {
	if def.kind == kindFlag {
		if o.Value != nil {
			return "", fmt.Errorf("takes no value")
		}
		return def.sql, nil
	}
	if o.Value == nil {
		return "", fmt.Errorf("needs a value")
	}
	v := *o.Value
	switch def.kind {
	case kindLiteral:
		lit, err := pg.Literal(v)
		if err != nil {
			return "", err
		}
		return def.sql + " " + lit, nil
	case kindIdent:
		if err := checkName(v); err != nil {
			return "", err
		}
		return def.sql + " " + pg.Ident(v), nil
	case kindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < -1 {
			return "", fmt.Errorf("%q is not an integer >= -1", v)
		}
		return def.sql + " " + strconv.FormatInt(n, 10), nil
	case kindOID:
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n == 0 {
			return "", fmt.Errorf("%q is not a positive 32-bit integer", v)
		}
		return def.sql + " " + strconv.FormatUint(n, 10), nil
	case kindBool:
		b, ok := parseBool(v)
		if !ok {
			return "", fmt.Errorf("%q is not a boolean", v)
		}
		return def.sql + " " + strconv.FormatBool(b), nil
	case kindKeyword:
		lv := strings.ToLower(strings.TrimSpace(v))
		for _, k := range def.keywords {
			if lv == k {
				return def.sql + " " + k, nil
			}
		}
		return "", fmt.Errorf("%q is not one of %s", v, strings.Join(def.keywords, ", "))
	}
	return "", fmt.Errorf("unsupported option kind")
}

// parseBool accepts the spellings Postgres accepts for booleans.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "t", "on", "yes", "y", "1":
		return true, true
	case "false", "f", "off", "no", "n", "0":
		return false, true
	}
	return false, false
}

// maxNameLen is NAMEDATALEN-1: Postgres silently truncates longer names, after which the
// catalog would never match the spec.
const maxNameLen = 63

// checkName refuses names Postgres cannot store as given.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name contains a NUL byte")
	case len(name) > maxNameLen:
		return fmt.Errorf("name is %d bytes long, more than %d", len(name), maxNameLen)
	}
	return nil
}
