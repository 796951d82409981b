package spec

import (
	"reflect"
	"strings"
	"testing"
)

func u32(v uint32) *uint32 { return &v }

// The legacy conversion (Neon main's PageserverConnectionInfo::from_connstr): one
// connstring is an unsharded tenant, n connstrings n shards with the stripe size.
func TestConnInfoFromConnstr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		connstr string
		stripe  *uint32
		want    PageserverConn
		wantErr string
	}{
		{"unsharded", "postgresql://no_user@ps:6400", nil, PageserverConn{ShardCount: 0, Prefer: ProtocolLibpq, Legacy: true,
			Shards: []PageserverShard{{Pageservers: []PageserverURLs{{Libpq: "postgresql://no_user@ps:6400"}}}}}, ""},
		{"unsharded ignores the stripe size", "host=ps port=6400", u32(32768), PageserverConn{Prefer: ProtocolLibpq, Legacy: true,
			Shards: []PageserverShard{{Pageservers: []PageserverURLs{{Libpq: "host=ps port=6400"}}}}}, ""},
		{"two shards", "postgresql://a:1, postgresql://b:2", u32(2048), PageserverConn{ShardCount: 2, StripeSize: 2048,
			Prefer: ProtocolLibpq, Legacy: true, Shards: []PageserverShard{
				{Pageservers: []PageserverURLs{{Libpq: "postgresql://a:1"}}},
				{Pageservers: []PageserverURLs{{Libpq: "postgresql://b:2"}}}}}, ""},
		{"shards without a stripe size", "postgresql://a:1,postgresql://b:2", nil, PageserverConn{}, "2 shards but no stripe_size"},
		{"an empty element: kept with a note, as Neon", "postgresql://a:1,,postgresql://b:2", u32(8), PageserverConn{ShardCount: 3, StripeSize: 8,
			Prefer: ProtocolLibpq, Legacy: true, Shards: []PageserverShard{
				{Pageservers: []PageserverURLs{{Libpq: "postgresql://a:1"}}},
				{Pageservers: []PageserverURLs{{Libpq: ""}}},
				{Pageservers: []PageserverURLs{{Libpq: "postgresql://b:2"}}}},
			Notes: []string{"element 1 of 3 of the pageserver connstring list is empty: that shard has no pageserver"}}, ""},
		{"empty", " ", nil, PageserverConn{}, "empty connection string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConnInfoFromConnstr(tc.connstr, tc.stripe)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	c, _ := ConnInfoFromConnstr("postgresql://a:1,postgresql://b:2,postgresql://c:3", u32(8))
	if c.TenantShard("t", 2) != "t-0203" || c.ShardID(1) != "0103" || c.LibpqConnstr() != "postgresql://a:1,postgresql://b:2,postgresql://c:3" {
		t.Errorf("ids %q %q %q", c.TenantShard("t", 2), c.ShardID(1), c.LibpqConnstr())
	}
	u, _ := ConnInfoFromConnstr("postgresql://a:1", nil)
	if u.TenantShard("t", 0) != "t" || u.ShardID(0) != "0000" {
		t.Errorf("unsharded ids %q %q", u.TenantShard("t", 0), u.ShardID(0))
	}
}

func connInfo(prefer string, count int, stripe any, shards map[string]any) map[string]any {
	m := map[string]any{"shard_count": count, "stripe_size": stripe, "shards": shards}
	if prefer != "" {
		m["prefer_protocol"] = prefer
	}
	return m
}

func ps(libpq, grpc any) map[string]any {
	return map[string]any{"pageservers": []any{map[string]any{"id": 1, "libpq_url": libpq, "grpc_url": grpc}}}
}

// Which of the three ways wins, and what a malformed pageserver_connection_info gets:
// one clear problem each, at /configure time rather than at the basebackup.
func TestParsePageserverConnectionInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(m map[string]any)
		want PageserverConn
		err  string
	}{
		{"legacy top-level field", func(m map[string]any) {}, PageserverConn{Prefer: ProtocolLibpq, Legacy: true,
			Shards: []PageserverShard{{Pageservers: []PageserverURLs{{Libpq: "postgresql://ps:6400"}}}}}, ""},
		{"legacy settings with their stripe size", func(m map[string]any) {
			delete(m, "pageserver_connstring")
			obj(m, "cluster")["settings"] = []any{setting("neon.pageserver_connstring", "host=a,host=b"), setting("neon.stripe_size", "1024")}
		}, PageserverConn{ShardCount: 2, StripeSize: 1024, Prefer: ProtocolLibpq, Legacy: true, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "host=a"}}}, {Pageservers: []PageserverURLs{{Libpq: "host=b"}}}}}, ""},
		{"legacy sharded without a stripe size", func(m map[string]any) { m["pageserver_connstring"] = "host=a,host=b" },
			PageserverConn{}, "pageserver_connstring: 2 shards but no stripe_size"},
		{"bad stripe setting", func(m map[string]any) {
			delete(m, "pageserver_connstring")
			obj(m, "cluster")["settings"] = []any{setting("neon.pageserver_connstring", "host=a,host=b"), setting("neon.stripe_size", "big")}
		}, PageserverConn{}, `neon.stripe_size "big": not a 32-bit number`},
		{"connection info wins, grpc preferred", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("grpc", 0, nil, map[string]any{"0000": ps("postgresql://new:6400", "grpc://new:51051")})
		}, PageserverConn{Prefer: ProtocolGRPC, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "postgresql://new:6400", GRPC: "grpc://new:51051"}}}}}, ""},
		{"connection info, sharded, libpq by default", func(m map[string]any) {
			delete(m, "pageserver_connstring")
			m["pageserver_connection_info"] = connInfo("", 2, 2048, map[string]any{
				"0102": ps("postgresql://b:1", nil), "0002": ps("postgresql://a:1", nil)})
		}, PageserverConn{ShardCount: 2, StripeSize: 2048, Prefer: ProtocolLibpq, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "postgresql://a:1"}}}, {Pageservers: []PageserverURLs{{Libpq: "postgresql://b:1"}}}}}, ""},
		{"unknown protocol", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("quic", 0, nil, map[string]any{"0000": ps("postgresql://a:1", nil)})
		}, PageserverConn{}, `pageserver_connection_info: prefer_protocol: unknown protocol "quic" (want libpq or grpc)`},
		{"missing shard", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("", 2, 8, map[string]any{"0002": ps("postgresql://a:1", nil)})
		}, PageserverConn{}, "pageserver_connection_info: shard 0102 missing from the shard map"},
		{"shard of another count", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("", 0, nil, map[string]any{"0000": ps("postgresql://a:1", nil), "0104": ps("postgresql://b:1", nil)})
		}, PageserverConn{}, `pageserver_connection_info: shards: key "0104" is not a shard of shard_count 0`},
		{"bad shard key", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("", 0, nil, map[string]any{"shard0": ps("postgresql://a:1", nil)})
		}, PageserverConn{}, `pageserver_connection_info: shards: key "shard0": want 4 hex digits (<number><count>)`},
		{"sharded without a stripe size: accepted with a note, as Neon", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("", 2, nil, map[string]any{
				"0002": ps("postgresql://a:1", nil), "0102": ps("postgresql://b:1", nil)})
		}, PageserverConn{ShardCount: 2, Prefer: ProtocolLibpq, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "postgresql://a:1"}}}, {Pageservers: []PageserverURLs{{Libpq: "postgresql://b:1"}}}},
			Notes: []string{"shard_count 2 but no stripe_size: no neon.stripe_size is written, Postgres uses its default"}}, ""},
		{"no pageserver", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("", 0, nil, map[string]any{"0000": map[string]any{"pageservers": []any{}}})
		}, PageserverConn{}, "pageserver_connection_info: shard 0000: must have at least one pageserver"},
		{"grpc preferred without a grpc url", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("grpc", 0, nil, map[string]any{"0000": ps("postgresql://a:1", nil)})
		}, PageserverConn{}, "pageserver_connection_info: no grpc_url for shard 0000 (pageserver 0)"},
		{"grpc url of another scheme", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("grpc", 0, nil, map[string]any{"0000": ps(nil, "https://a:1")})
		}, PageserverConn{}, `pageserver_connection_info: shard 0000: pageserver 0: grpc_url "https://a:1": scheme "https", want grpc://host:port`},
		{"grpc url with no_user@, as Neon writes it", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("grpc", 0, nil, map[string]any{"0000": ps("postgres://no_user@ps:6400", "grpc://no_user@ps:51051")})
		}, PageserverConn{Prefer: ProtocolGRPC, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "postgres://no_user@ps:6400", GRPC: "grpc://no_user@ps:51051"}}}}}, ""},
		{"malformed grpc url not preferred", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("libpq", 0, nil, map[string]any{"0000": ps("postgresql://a:1", "https://a:1/x")})
		}, PageserverConn{Prefer: ProtocolLibpq, Shards: []PageserverShard{
			{Pageservers: []PageserverURLs{{Libpq: "postgresql://a:1", GRPC: "https://a:1/x"}}}}}, ""},
		{"grpc url with a line break", func(m map[string]any) {
			m["pageserver_connection_info"] = connInfo("grpc", 0, nil, map[string]any{"0000": ps(nil, "grpc://a:1\nx")})
		}, PageserverConn{}, "pageserver_connection_info: shard 0000: pageserver 0: a URL contains a control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSpec(edit(t, neonSpec, tc.fn))
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(s)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Storage != StorageNeon || !reflect.DeepEqual(p.Pageserver, tc.want) {
				t.Fatalf("got %s %+v\nwant %+v", p.Storage, p.Pageserver, tc.want)
			}
			if p.PageserverConnstr != tc.want.LibpqConnstr() {
				t.Errorf("PageserverConnstr %q", p.PageserverConnstr)
			}
		})
	}
	// A malformed shard_count is a decode error that names the field.
	if _, err := ParseSpec(edit(t, neonSpec, func(m map[string]any) {
		m["pageserver_connection_info"] = connInfo("", 300, 8, map[string]any{})
	})); err == nil || !strings.Contains(err.Error(), "shard_count") {
		t.Errorf("shard_count 300: %v", err)
	}
}

func TestPageserverConnEqual(t *testing.T) {
	a, _ := ConnInfoFromConnstr("postgresql://a:1,postgresql://b:1", u32(8))
	b, _ := ConnInfoFromConnstr("postgresql://a:1,postgresql://b:1", u32(8))
	c, _ := ConnInfoFromConnstr("postgresql://a:1,postgresql://c:1", u32(8))
	if !a.Equal(b) || a.Equal(c) || a.Equal(PageserverConn{}) {
		t.Error("Equal")
	}
}

func TestGRPCAddr(t *testing.T) {
	for raw, want := range map[string]string{
		"grpc://ps:51051":         "ps:51051",
		"grpc://no_user@ps:51051": "ps:51051",
		"http://u:p@ps:1/":        "ps:1",
		"grpc://ps":               "",
		"https://ps:1":            "",
		"grpc://ps:1/path":        "",
	} {
		got, err := GRPCAddr(raw)
		if want == "" {
			if err == nil {
				t.Errorf("%s: accepted as %q", raw, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", raw, got, err, want)
		}
	}
}
