package spec

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// StorageMode is where a compute's data lives: "standalone" or "neon" (as the state record
// and the logs spell it).
type StorageMode string

// Storage modes.
const (
	// StorageNeon: PGDATA comes from a pageserver basebackup, WAL goes to safekeepers.
	StorageNeon StorageMode = "neon"
	// StorageStandalone: vanilla PostgreSQL with a local, initdb'd PGDATA.
	StorageStandalone StorageMode = "standalone"
)

// MaxIdentifierLen is PostgreSQL's NAMEDATALEN-1: longer names would be truncated.
const MaxIdentifierLen = 63

// Parsed is a validated spec with the storage parameters resolved (Neon's ParsedSpec):
// each comes from the top-level field or, failing that, from the cluster.settings GUC.
type Parsed struct {
	Spec *ComputeSpec
	// Storage is StorageNeon when a pageserver connstring is given, else StorageStandalone.
	Storage StorageMode
	// TenantID and TimelineID are 32 lowercase hex digits; empty only in standalone mode
	// when none is given.
	TenantID   string
	TimelineID string
	// Pageserver is the pageserver connection info (neon mode), from
	// pageserver_connection_info or converted from the legacy connstring.
	Pageserver PageserverConn
	// PageserverConnstr is the libpq URLs of the shards, comma-separated, shard 0 first
	// (Pageserver.LibpqConnstr); empty in standalone mode or when a shard has no libpq URL.
	PageserverConnstr string
	// SafekeeperConnstrings are host:port; empty for replicas, static computes and
	// (usually) standalone mode.
	SafekeeperConnstrings []string
	// StorageAuthToken is the JWT for pageserver and safekeepers ("" when none). Secret.
	StorageAuthToken     string
	EndpointStorageAddr  string
	EndpointStorageToken string // secret
}

// Neon reports whether the compute runs on Neon storage.
func (p *Parsed) Neon() bool { return p.Storage == StorageNeon }

// ValidationError lists every problem found in a spec. With a single problem its text is
// exactly that problem (Neon's messages, e.g. "invalid tenant id").
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string { return strings.Join(e.Problems, "; ") }

// Parse resolves and validates spec. In neon mode it applies Neon's checks with Neon's
// messages; in both modes it rejects role/database names and settings that would only
// fail later (empty, NUL, too long, duplicates, renames without new_name, settings
// that would break postgresql.conf). All problems are reported together.
func Parse(s *ComputeSpec) (*Parsed, error) {
	if s == nil {
		return nil, &ValidationError{Problems: []string{"spec is missing"}}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	settings := s.Cluster.Settings
	p := &Parsed{Spec: s, Storage: StorageStandalone}

	neon := s.PageserverConnectionInfo != nil || s.PageserverConnstring != nil || hasOption(settings, "neon.pageserver_connstring")
	if neon {
		p.Storage = StorageNeon
		if c, err := resolvePageserver(s, settings); err != nil {
			fail("%v", err)
		} else {
			p.Pageserver = c
			p.PageserverConnstr = c.LibpqConnstr()
		}
	}

	// Safekeepers: only a primary takes them from the settings, as in Neon.
	sksFromSettings := false
	if len(s.SafekeeperConnstrings) > 0 {
		p.SafekeeperConnstrings = append([]string(nil), s.SafekeeperConnstrings...)
	} else if s.Mode.IsPrimary() {
		if v, ok := settings.Find("neon.safekeepers"); ok {
			sksFromSettings = true
			for _, sk := range strings.Split(v, ",") {
				if sk != "" {
					p.SafekeeperConnstrings = append(p.SafekeeperConnstrings, sk)
				}
			}
		}
	}
	if neon && s.Mode.IsPrimary() {
		if len(s.SafekeeperConnstrings) == 0 && !sksFromSettings {
			fail("safekeeper connstrings should be provided")
		} else if len(p.SafekeeperConnstrings) == 0 {
			fail("safekeeper_connstrings is empty")
		} else if dup, ok := firstDuplicate(p.SafekeeperConnstrings); ok {
			fail("duplicate entry in safekeeper_connstrings: %s!", dup)
		}
	}
	if neon {
		for i, sk := range s.SafekeeperConnstrings {
			if strings.TrimSpace(sk) == "" {
				fail("safekeeper_connstrings[%d]: empty entry", i)
			}
		}
	}

	checkTopStrings(s, fail)

	p.TenantID = resolveID(s.TenantID, settings, "neon.tenant_id", "tenant", neon, fail)
	p.TimelineID = resolveID(s.TimelineID, settings, "neon.timeline_id", "timeline", neon, fail)

	if s.StorageAuthToken != nil {
		p.StorageAuthToken = *s.StorageAuthToken
	}
	p.EndpointStorageAddr = firstOf(s.EndpointStorageAddr, settings, "neon.endpoint_storage_addr")
	p.EndpointStorageToken = firstOf(s.EndpointStorageToken, settings, "neon.endpoint_storage_token")

	validateCatalog(s, fail)

	if len(errs) > 0 {
		return nil, &ValidationError{Problems: errs}
	}
	return p, nil
}

// resolvePageserver takes the pageserver connection info the way Neon's ParsedSpec does:
// pageserver_connection_info; else pageserver_connstring with shard_stripe_size; else the
// neon.pageserver_connstring and neon.stripe_size GUCs.
func resolvePageserver(s *ComputeSpec, settings GenericOptions) (PageserverConn, error) {
	if s.PageserverConnectionInfo != nil {
		c, err := resolveConnInfo(s.PageserverConnectionInfo)
		if err != nil {
			return c, fmt.Errorf("pageserver_connection_info: %w", err)
		}
		return c, nil
	}
	if s.PageserverConnstring != nil {
		var stripe *uint32
		if s.ShardStripeSize != nil {
			if *s.ShardStripeSize > 1<<32-1 {
				return PageserverConn{}, fmt.Errorf("shard_stripe_size %d: too large", *s.ShardStripeSize)
			}
			v := uint32(*s.ShardStripeSize)
			stripe = &v
		}
		c, err := ConnInfoFromConnstr(*s.PageserverConnstring, stripe)
		if err != nil {
			if strings.TrimSpace(*s.PageserverConnstring) == "" {
				return c, errors.New("pageserver connstr should be provided")
			}
			return c, fmt.Errorf("pageserver_connstring: %w", err)
		}
		return c, nil
	}
	v, _ := settings.Find("neon.pageserver_connstring")
	var stripe *uint32
	if sv, ok := settings.Find("neon.stripe_size"); ok {
		n, err := strconv.ParseUint(strings.TrimSpace(sv), 10, 32)
		if err != nil {
			return PageserverConn{}, fmt.Errorf("neon.stripe_size %q: not a 32-bit number", sv)
		}
		v32 := uint32(n)
		stripe = &v32
	}
	c, err := ConnInfoFromConnstr(v, stripe)
	if err != nil {
		if strings.TrimSpace(v) == "" {
			return c, errors.New("pageserver connstr should be provided")
		}
		return c, fmt.Errorf("neon.pageserver_connstring: %w", err)
	}
	return c, nil
}

// checkTopStrings rejects control characters (a line break, NUL, any other C0 control or
// DEL) in the top-level strings that end up in postgresql.conf (the storage settings and
// neon.*_id lines: a line break would end the quoted value and inject settings, or keep
// Postgres from starting), in Postgres's environment (storage_auth_token) or in HTTP
// requests and log lines (the endpoint storage address and token, logs_export_host). No
// valid value has one.
func checkTopStrings(s *ComputeSpec, fail func(string, ...any)) {
	for _, f := range []struct {
		name string
		v    *string
	}{
		{"tenant_id", s.TenantID}, {"timeline_id", s.TimelineID}, {"pageserver_connstring", s.PageserverConnstring},
		{"project_id", s.ProjectID}, {"branch_id", s.BranchID}, {"endpoint_id", s.EndpointID},
		{"storage_auth_token", s.StorageAuthToken}, {"logs_export_host", s.LogsExportHost},
		{"endpoint_storage_addr", s.EndpointStorageAddr}, {"endpoint_storage_token", s.EndpointStorageToken},
		{"operation_uuid", s.OperationUUID},
	} {
		if f.v != nil && hasControl(*f.v) {
			fail("%s: contains a control character (line break, NUL, ...)", f.name)
		}
	}
	for i, sk := range s.SafekeeperConnstrings {
		if hasControl(sk) {
			fail("safekeeper_connstrings[%d]: contains a control character (line break, NUL, ...)", i)
		}
	}
}

func hasControl(v string) bool {
	return strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

func hasOption(o GenericOptions, name string) bool {
	_, ok := o.Find(name)
	return ok
}

func firstOf(top *string, settings GenericOptions, guc string) string {
	if top != nil {
		return *top
	}
	v, _ := settings.Find(guc)
	return v
}

// resolveID takes the top-level id or the settings GUC; it must be 32 lowercase hex
// digits whenever given, and must be given in neon mode.
func resolveID(top *string, settings GenericOptions, guc, what string, required bool, fail func(string, ...any)) string {
	var v string
	given := false
	if top != nil {
		v, given = *top, true
	} else if sv, ok := settings.Find(guc); ok {
		v, given = sv, true
	}
	if !given {
		if required {
			fail("%s id should be provided", what)
		}
		return ""
	}
	if !IsHexID(v) {
		fail("invalid %s id", what)
		return ""
	}
	return v
}

// IsHexID reports whether s is a Neon tenant/timeline id: 32 lowercase hex digits.
func IsHexID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// firstDuplicate finds a repeated entry the way Neon does (first repeat in sorted order).
func firstDuplicate(list []string) (string, bool) {
	sorted := append([]string(nil), list...)
	sort.Strings(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return sorted[i], true
		}
	}
	return "", false
}

// CheckIdentifier reports why name cannot be a role or database name, or "" if it can.
func CheckIdentifier(name string) string {
	switch {
	case name == "":
		return "name is empty"
	case strings.IndexByte(name, 0) >= 0:
		return "name contains a NUL byte"
	case len(name) > MaxIdentifierLen:
		return fmt.Sprintf("name is %d bytes long, at most %d allowed", len(name), MaxIdentifierLen)
	}
	return ""
}

func validateCatalog(s *ComputeSpec, fail func(string, ...any)) {
	roles := map[string]bool{}
	for i, r := range s.Cluster.Roles {
		if why := CheckIdentifier(r.Name); why != "" {
			fail("cluster.roles[%d]: %s", i, why)
			continue
		}
		if roles[r.Name] {
			fail("cluster.roles[%d]: duplicate role name %q", i, r.Name)
		}
		roles[r.Name] = true
	}
	dbs := map[string]bool{}
	for i, d := range s.Cluster.Databases {
		if why := CheckIdentifier(d.Name); why != "" {
			fail("cluster.databases[%d]: %s", i, why)
		} else {
			if dbs[d.Name] {
				fail("cluster.databases[%d]: duplicate database name %q", i, d.Name)
			}
			dbs[d.Name] = true
		}
		if why := CheckIdentifier(d.Owner); why != "" {
			fail("cluster.databases[%d]: owner %s", i, strings.TrimPrefix(why, "name "))
		}
	}
	for i, op := range s.DeltaOperations {
		if why := CheckIdentifier(op.Name); why != "" {
			fail("delta_operations[%d]: %s", i, why)
		}
		if op.Action == DeltaRenameDB || op.Action == DeltaRenameRole {
			if op.NewName == nil {
				fail("delta_operations[%d]: %s of %q needs new_name", i, op.Action, op.Name)
			} else if why := CheckIdentifier(*op.NewName); why != "" {
				fail("delta_operations[%d]: new_name: %s", i, strings.TrimPrefix(why, "name "))
			}
		}
	}
	for i, o := range s.Cluster.Settings {
		if why := checkSetting(o); why != "" {
			fail("cluster.settings[%d]: %s", i, why)
		}
	}
}

// checkSetting rejects settings that would corrupt postgresql.conf: a name that is not a
// configuration parameter name (PostgreSQL's guc-file.l: ID or ID.ID), or a value with
// a line break or NUL: raw values would inject extra lines, and PostgreSQL refuses a
// quoted value that spans lines, so Postgres would not start.
func checkSetting(o GenericOption) string {
	if !validGUCName(o.Name) {
		return fmt.Sprintf("%q is not a valid configuration parameter name", o.Name)
	}
	if o.Value != nil && strings.ContainsAny(*o.Value, "\x00\r\n") {
		return fmt.Sprintf("value of %s contains a line break or NUL byte", o.Name)
	}
	return ""
}

func validGUCName(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			letter := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
			if !(letter || i > 0 && c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}
