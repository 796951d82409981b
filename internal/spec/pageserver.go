package spec

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// PageserverProtocol is the protocol a compute speaks to the pageservers (Neon main's
// compute_api PageserverProtocol): "libpq" (basebackup and lease as Postgres wire
// commands, postgres:// URLs) or "grpc" (page_api.PageService, grpc:// URLs).
type PageserverProtocol string

// The pageserver protocols. An absent prefer_protocol means libpq, as in Neon.
const (
	ProtocolLibpq PageserverProtocol = "libpq"
	ProtocolGRPC  PageserverProtocol = "grpc"
)

// PageserverConnectionInfo is the spec's pageserver_connection_info (Neon main, added
// after the reference commit): the shards of the tenant with the libpq and gRPC URLs of
// their pageservers, and the protocol to prefer. The legacy pageserver_connstring (with
// shard_stripe_size) and the neon.pageserver_connstring GUC convert to it
// (ConnInfoFromConnstr) when it is absent.
type PageserverConnectionInfo struct {
	// ShardCount is 0 for an unsharded tenant (shard map key "0000"), else the number
	// of shards (keys "<number><count>" in hex: "0104" is shard 1 of 4).
	ShardCount uint8 `json:"shard_count"`
	// StripeSize is the shard stripe size in pages; required when ShardCount > 0.
	StripeSize *uint32                        `json:"stripe_size"`
	Shards     map[string]PageserverShardInfo `json:"shards"`
	// PreferProtocol is "libpq" (the default when absent) or "grpc"; the URLs of that
	// protocol must be there for every shard.
	PreferProtocol PageserverProtocol `json:"prefer_protocol,omitempty"`
}

// PageserverShardInfo lists the pageservers of one shard (Neon sends one).
type PageserverShardInfo struct {
	Pageservers []PageserverShardConnectionInfo `json:"pageservers"`
}

// PageserverShardConnectionInfo is one pageserver of a shard.
type PageserverShardConnectionInfo struct {
	ID       *uint64 `json:"id"`
	LibpqURL *string `json:"libpq_url"`
	GRPCURL  *string `json:"grpc_url"`
}

// PageserverConn is the resolved, validated pageserver connection info of a neon-mode
// spec (Parsed.Pageserver), whichever of the three ways the spec gave it.
type PageserverConn struct {
	// ShardCount is 0 for an unsharded tenant; Shards then has one element.
	ShardCount int
	// StripeSize is 0 when not given (unsharded).
	StripeSize uint32
	// Shards is indexed by shard number; each has at least one pageserver, and the
	// first has a URL for Prefer.
	Shards []PageserverShard
	Prefer PageserverProtocol
	// Legacy says the info was converted from pageserver_connstring or the GUC.
	Legacy bool
	// Notes are what Neon accepts but looks wrong (a sharded tenant without a stripe
	// size, an empty element of a legacy list): accepted as Neon does, each to be
	// logged by whoever takes the config. Equal ignores them.
	Notes []string
}

// PageserverShard is one shard's pageservers (first: the one basebackup uses).
type PageserverShard struct {
	Pageservers []PageserverURLs
}

// PageserverURLs are one pageserver's URLs ("" when the spec has none).
type PageserverURLs struct {
	Libpq, GRPC string
}

// URL is the pageserver's URL for protocol p.
func (u PageserverURLs) URL(p PageserverProtocol) string {
	if p == ProtocolGRPC {
		return u.GRPC
	}
	return u.Libpq
}

// ShardIndex is Neon's ShardIndex text for shard number of count: "<number><count>" in
// two hex digits each ("0000" unsharded).
func ShardIndex(number, count int) string { return fmt.Sprintf("%02x%02x", number, count) }

// ShardID is the neon-shard-id of shard i ("0000" for an unsharded tenant).
func (c PageserverConn) ShardID(i int) string { return ShardIndex(i, c.ShardCount) }

// TenantShard is Neon's TenantShardId text of shard i: the tenant id alone when
// unsharded, else "<tenant>-<number><count>".
func (c PageserverConn) TenantShard(tenant string, i int) string {
	if c.ShardCount == 0 {
		return tenant
	}
	return tenant + "-" + c.ShardID(i)
}

// Shard0URL is the URL of shard 0's first pageserver for the preferred protocol.
func (c PageserverConn) Shard0URL() string {
	if len(c.Shards) == 0 || len(c.Shards[0].Pageservers) == 0 {
		return ""
	}
	return c.Shards[0].Pageservers[0].URL(c.Prefer)
}

// LibpqConnstr is the value of neon.pageserver_connstring: the libpq URLs of every
// shard's first pageserver, comma-separated, shard 0 first; "" when a shard has none
// (then Postgres gets no connstring, as compute_ctl writes it).
func (c PageserverConn) LibpqConnstr() string {
	urls := make([]string, 0, len(c.Shards))
	for _, s := range c.Shards {
		if len(s.Pageservers) == 0 || s.Pageservers[0].Libpq == "" {
			return ""
		}
		urls = append(urls, s.Pageservers[0].Libpq)
	}
	return strings.Join(urls, ",")
}

// Equal reports whether c and o name the same pageservers the same way (the test of
// refresh_configuration: a refreshed spec with the same info changes nothing).
func (c PageserverConn) Equal(o PageserverConn) bool {
	if c.ShardCount != o.ShardCount || c.StripeSize != o.StripeSize || c.Prefer != o.Prefer || len(c.Shards) != len(o.Shards) {
		return false
	}
	for i := range c.Shards {
		a, b := c.Shards[i].Pageservers, o.Shards[i].Pageservers
		if len(a) != len(b) {
			return false
		}
		for j := range a {
			if a[j] != b[j] {
				return false
			}
		}
	}
	return true
}

// ConnInfoFromConnstr is Neon's legacy conversion (PageserverConnectionInfo::from_connstr):
// a comma-separated list of libpq connstrings, one per shard. One element is an unsharded
// tenant (shard_count 0, stripe size ignored); n > 1 elements are n shards and need a
// stripe size. Elements are trimmed. An empty connstring is refused; an empty element of
// a list is kept, as Neon keeps it (that shard has no URL, so no
// neon.pageserver_connstring is written and a basebackup from it fails), with a note.
func ConnInfoFromConnstr(connstr string, stripe *uint32) (PageserverConn, error) {
	parts := strings.Split(connstr, ",")
	c := PageserverConn{Prefer: ProtocolLibpq, Legacy: true}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			if len(parts) == 1 {
				return PageserverConn{}, fmt.Errorf("empty connection string")
			}
			c.Notes = append(c.Notes, fmt.Sprintf("element %d of %d of the pageserver connstring list is empty: that shard has no pageserver", i, len(parts)))
		}
		c.Shards = append(c.Shards, PageserverShard{Pageservers: []PageserverURLs{{Libpq: p}}})
	}
	if n := len(parts); n > 1 {
		if stripe == nil {
			return PageserverConn{}, fmt.Errorf("%d shards but no stripe_size", n)
		}
		if n > 255 {
			return PageserverConn{}, fmt.Errorf("%d shards: at most 255", n)
		}
		c.ShardCount, c.StripeSize = n, *stripe
	}
	return c, nil
}

// resolveConnInfo converts the spec's pageserver_connection_info, checking what Neon
// would only find when it uses it (a missing shard, a shard without a URL for the
// preferred protocol): such a spec cannot start a compute, so it is refused at once.
func resolveConnInfo(ci *PageserverConnectionInfo) (PageserverConn, error) {
	c := PageserverConn{ShardCount: int(ci.ShardCount), Prefer: ci.PreferProtocol}
	switch c.Prefer {
	case "":
		c.Prefer = ProtocolLibpq
	case ProtocolLibpq, ProtocolGRPC:
	default:
		return PageserverConn{}, fmt.Errorf("prefer_protocol: unknown protocol %q (want libpq or grpc)", ci.PreferProtocol)
	}
	if ci.StripeSize != nil {
		c.StripeSize = *ci.StripeSize
	} else if c.ShardCount > 0 {
		// Neon takes it (no neon.stripe_size is written; the neon extension uses its
		// default), so do we, saying so.
		c.Notes = append(c.Notes, fmt.Sprintf("shard_count %d but no stripe_size: no neon.stripe_size is written, Postgres uses its default", c.ShardCount))
	}
	n := max(c.ShardCount, 1)
	for key := range ci.Shards {
		num, count, err := parseShardIndex(key)
		if err != nil {
			return PageserverConn{}, fmt.Errorf("shards: %w", err)
		}
		if count != c.ShardCount || num >= n {
			return PageserverConn{}, fmt.Errorf("shards: key %q is not a shard of shard_count %d", key, c.ShardCount)
		}
	}
	c.Shards = make([]PageserverShard, n)
	for i := range n {
		key := ShardIndex(i, c.ShardCount)
		info, ok := ci.Shards[key]
		if !ok {
			return PageserverConn{}, fmt.Errorf("shard %s missing from the shard map", key)
		}
		if len(info.Pageservers) == 0 {
			return PageserverConn{}, fmt.Errorf("shard %s: must have at least one pageserver", key)
		}
		for j, ps := range info.Pageservers {
			u := PageserverURLs{}
			if ps.LibpqURL != nil {
				u.Libpq = *ps.LibpqURL
			}
			if ps.GRPCURL != nil {
				u.GRPC = *ps.GRPCURL
			}
			if hasControl(u.Libpq) || hasControl(u.GRPC) {
				return PageserverConn{}, fmt.Errorf("shard %s: pageserver %d: a URL contains a control character", key, j)
			}
			if u.GRPC != "" && c.Prefer == ProtocolGRPC {
				// Only the preferred protocol's URLs are used; Neon leaves the
				// others unparsed too, so a malformed one is no reason to refuse.
				if _, err := GRPCAddr(u.GRPC); err != nil {
					return PageserverConn{}, fmt.Errorf("shard %s: pageserver %d: %w", key, j, err)
				}
			}
			if u.URL(c.Prefer) == "" {
				// Neon: the preferred protocol's URLs "must be present for all shards".
				return PageserverConn{}, fmt.Errorf("no %s_url for shard %s (pageserver %d)", c.Prefer, key, j)
			}
			c.Shards[i].Pageservers = append(c.Shards[i].Pageservers, u)
		}
	}
	return c, nil
}

// parseShardIndex reads a shard map key: 4 hex digits, number then count.
func parseShardIndex(key string) (num, count int, err error) {
	if len(key) != 4 {
		return 0, 0, fmt.Errorf("key %q: want 4 hex digits (<number><count>)", key)
	}
	v, err := strconv.ParseUint(key, 16, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("key %q: want 4 hex digits (<number><count>)", key)
	}
	return int(v >> 8), int(v & 0xff), nil
}

// GRPCAddr checks a pageserver gRPC URL (grpc://host:port, as Neon's storage controller
// sends it; http:// is taken as the same plaintext HTTP/2) and returns host:port. User info
// (Neon writes grpc://no_user@host:port) is dropped: the token travels in the
// authorization header.
func GRPCAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("grpc_url: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "grpc", "http":
	default:
		return "", fmt.Errorf("grpc_url %q: scheme %q, want grpc://host:port", raw, u.Scheme)
	}
	if u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("grpc_url %q: want grpc://host:port", raw)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return "", fmt.Errorf("grpc_url %q: want grpc://host:port and nothing else", raw)
	}
	return u.Host, nil
}
