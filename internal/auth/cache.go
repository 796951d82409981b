package auth

import (
	"sync"
	"time"
)

// DefaultCacheSize is how many verified tokens a Verifier keeps by default. A control
// plane uses a handful of tokens at a time; the bound only keeps memory fixed.
const DefaultCacheSize = 1024

// maxCachedToken is the longest token kept in the cache (longer ones are verified every
// time): the cache's memory stays bounded by size × maxCachedToken.
const maxCachedToken = 8 << 10

// tokenCache holds the claims of tokens whose signature verified, keyed by the token's
// bytes. Only verified tokens enter it, so requests with forged tokens cannot fill it;
// when full, expired entries go first, then an arbitrary one. A nil cache keeps nothing.
type tokenCache struct {
	mu   sync.RWMutex
	max  int
	toks map[string]claims
}

func newTokenCache(max int) *tokenCache {
	if max <= 0 {
		return nil
	}
	return &tokenCache{max: max, toks: make(map[string]claims)}
}

func (t *tokenCache) get(token string) (claims, bool) {
	if t == nil {
		return claims{}, false
	}
	t.mu.RLock()
	c, ok := t.toks[token]
	t.mu.RUnlock()
	return c, ok
}

func (t *tokenCache) put(token string, c claims, now time.Time) {
	if t == nil || len(token) > maxCachedToken {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.toks[token]; !ok && len(t.toks) >= t.max {
		t.evict(now)
	}
	t.toks[token] = c
}

// evict makes room for one entry: every expired token, else one arbitrary token.
func (t *tokenCache) evict(now time.Time) {
	for tok, c := range t.toks {
		if c.Expiry != nil && now.After(c.Expiry.Time().Add(Leeway)) {
			delete(t.toks, tok)
		}
	}
	if len(t.toks) < t.max {
		return
	}
	for tok := range t.toks {
		delete(t.toks, tok)
		return
	}
}

func (t *tokenCache) remove(token string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.toks, token)
	t.mu.Unlock()
}

// len is the number of cached tokens (tests).
func (t *tokenCache) len() int {
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.toks)
}
