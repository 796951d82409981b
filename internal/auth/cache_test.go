package auth

import (
	"net/http"
	"testing"
	"time"
)

// The cache keeps verified tokens only, and a cached token still expires by the
// Verifier's clock.
func TestCachedTokenStillExpires(t *testing.T) {
	k := newKey(t)
	now := testNow
	v, err := NewVerifier(jwks(neonJWK("k1", k.pub)), computeID, WithClock(func() time.Time { return now }), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, k.priv, map[string]any{"compute_id": computeID, "exp": testNow.Add(10 * time.Second).Unix()})
	for range 2 {
		if e := v.Authorize("Bearer " + tok); e != nil {
			t.Fatalf("fresh token refused: %v", e)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d tokens, want 1", n)
	}
	now = testNow.Add(10*time.Second + Leeway) // at the limit: still valid
	if e := v.Authorize("Bearer " + tok); e != nil {
		t.Fatalf("token within the leeway refused: %v", e)
	}
	now = now.Add(time.Second)
	if e := v.Authorize("Bearer " + tok); e == nil || e.Status != http.StatusUnauthorized || e.Message != MsgVerifyFailed {
		t.Fatalf("expired cached token: %v, want 401 %q", e, MsgVerifyFailed)
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("expired token still cached (%d entries)", n)
	}
}

// A token with a forged signature never enters the cache and is refused even when the
// genuine token (same header and claims) is cached.
func TestCacheKeyIsTheWholeToken(t *testing.T) {
	k, other := newKey(t), newKey(t)
	v, err := NewVerifier(jwks(neonJWK("k1", k.pub)), computeID, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"compute_id": computeID}
	good := sign(t, k.priv, claims)
	if e := v.Authorize("Bearer " + good); e != nil {
		t.Fatal(e)
	}
	forged := sign(t, other.priv, claims)
	if e := v.Authorize("Bearer " + forged); e == nil || e.Status != http.StatusUnauthorized {
		t.Fatalf("forged token: %v, want 401", e)
	}
	// The same payload with a flipped signature byte.
	b := []byte(good)
	b[len(b)-2] ^= 1
	if e := v.Authorize("Bearer " + string(b)); e == nil || e.Status != http.StatusUnauthorized {
		t.Fatalf("tampered token: %v, want 401", e)
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d tokens, want only the genuine one", n)
	}
	// The claims checks after verification still run on a cached token.
	wrongID := sign(t, k.priv, map[string]any{"compute_id": "another"})
	for range 2 {
		if e := v.Authorize("Bearer " + wrongID); e == nil || e.Status != http.StatusForbidden {
			t.Fatalf("token of another compute: %v, want 403", e)
		}
	}
}

// The cache is bounded; a token pushed out is verified again, not refused.
func TestCacheBounded(t *testing.T) {
	k := newKey(t)
	now := testNow
	v, err := NewVerifier(jwks(neonJWK("k1", k.pub)), computeID, WithCacheSize(2), WithClock(func() time.Time { return now }), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := range 5 {
		toks = append(toks, sign(t, k.priv, map[string]any{"compute_id": computeID, "exp": testNow.Add(time.Duration(i+1) * time.Hour).Unix()}))
	}
	for round := range 2 {
		for i, tok := range toks {
			if e := v.Authorize("Bearer " + tok); e != nil {
				t.Fatalf("round %d token %d: %v", round, i, e)
			}
			if n := v.cache.len(); n > 2 {
				t.Fatalf("cache holds %d tokens, bound 2", n)
			}
		}
	}
	// Expired entries are the first to go: all of them.
	now = testNow.Add(6 * time.Hour)
	fresh := sign(t, k.priv, map[string]any{"compute_id": computeID})
	if e := v.Authorize("Bearer " + fresh); e != nil {
		t.Fatal(e)
	}
	if _, ok := v.cache.get(fresh); !ok || v.cache.len() != 1 {
		t.Fatalf("fresh token cached: %v, %d entries (want only it: the others expired)", ok, v.cache.len())
	}
	// Disabled cache: nothing kept, tokens still verified.
	nc, err := NewVerifier(jwks(neonJWK("k1", k.pub)), computeID, WithCacheSize(0), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if e := nc.Authorize("Bearer " + fresh); e != nil || nc.cache.len() != 0 {
		t.Fatalf("without cache: %v, %d cached", e, nc.cache.len())
	}
}
