// Package auth verifies the JWTs that guard compute-api's external port, following
// compute_ctl's rules exactly (compute_tools/src/http/middleware/authorize.rs): EdDSA
// keys from the JWKS of compute_ctl_config, every key tried in turn, exp checked only
// when present with 60 s of leeway, nbf ignored, then the compute_id or the admin scope +
// audience claims.
//
// A token whose signature and claims verified is kept in a bounded cache (tokenCache,
// keyed by the token's bytes), so that a control plane polling with the same token costs
// one signature check, not one per request: the exp check (with the clock of the
// Verifier) is made again on every use, and the cache belongs to the Verifier, so that a
// new key set (a new Verifier, Server.SetVerifier / SetJWKS) starts with an empty one.
//
// Signature checking and JOSE parsing are done by github.com/go-jose/go-jose/v4, a
// well-kept, widely used library; this package writes no cryptography of its own. It
// only chooses what to accept. Tokens never reach logs or error texts.
package auth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AdminScope is the only scope value compute_ctl knows. A token with it is checked for
// the "compute" audience instead of the compute ID.
const AdminScope = "compute_ctl:admin"

// Audience is the audience an admin token must name.
const Audience = "compute"

// Leeway is the clock skew allowed when checking exp (the default of the Rust library
// compute_ctl uses).
const Leeway = 60 * time.Second

// The messages compute_ctl answers with.
const (
	MsgInvalidToken     = "invalid authorization token"
	MsgVerifyFailed     = "failed to verify authorization token"
	MsgMissingAudience  = "missing audience in authorization token claims"
	MsgInvalidAudience  = "invalid audience in authorization token claims"
	MsgMissingComputeID = "missing compute_id in authorization token claims"
	MsgInvalidComputeID = "invalid compute ID in authorization token claims"
)

// Error is a refused request: the HTTP status and the text for {"error": ...}.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Verifier checks bearer tokens against a fixed key set and compute ID. It is safe for
// concurrent use.
type Verifier struct {
	keys      []ed25519.PublicKey
	computeID string
	now       func() time.Time
	log       *slog.Logger
	cache     *tokenCache
}

// Option adjusts a Verifier.
type Option func(*Verifier)

// WithLogger sets the logger that reports skipped keys (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(v *Verifier) {
		if l != nil {
			v.log = l
		}
	}
}

// WithCacheSize sets how many verified tokens are kept (default DefaultCacheSize; 0 or
// less: none, every token is verified on every request).
func WithCacheSize(n int) Option {
	return func(v *Verifier) { v.cache = newTokenCache(n) }
}

// WithClock sets the clock used for exp (tests).
func WithClock(now func() time.Time) Option {
	return func(v *Verifier) { v.now = now }
}

// NewVerifier parses jwks (an RFC 7517 key set, as in compute_ctl_config.jwks) and
// returns a verifier for computeID. Keys that cannot be used as Ed25519 verification keys
// are skipped and logged by kid, as compute_ctl skips keys that fail to convert. An empty
// or null set is allowed: every token then fails with 401, as in compute_ctl. Only a set
// that is not JSON of the right shape is an error.
func NewVerifier(jwks json.RawMessage, computeID string, opts ...Option) (*Verifier, error) {
	v := &Verifier{computeID: computeID, now: time.Now, log: slog.Default(), cache: newTokenCache(DefaultCacheSize)}
	for _, o := range opts {
		o(v)
	}
	trimmed := bytes.TrimSpace(jwks)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return v, nil
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(trimmed, &set); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	for i, raw := range set.Keys {
		key, kid, err := edKey(raw)
		if err != nil {
			v.log.Warn("skipping unusable JWKS key", "index", i, "kid", kid, "err", err)
			continue
		}
		v.keys = append(v.keys, key)
	}
	return v, nil
}

// edKey converts one JWK to an Ed25519 public key.
func edKey(raw json.RawMessage) (ed25519.PublicKey, string, error) {
	var hdr struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(raw, &hdr) // only for the log line
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, hdr.Kid, fmt.Errorf("decode key: %w", err)
	}
	switch key := k.Key.(type) {
	case ed25519.PublicKey:
		return key, k.KeyID, nil
	case ed25519.PrivateKey:
		return key.Public().(ed25519.PublicKey), k.KeyID, nil
	default:
		return nil, k.KeyID, fmt.Errorf("not an Ed25519 key (%T)", k.Key)
	}
}

// Keys is the number of usable keys.
func (v *Verifier) Keys() int { return len(v.keys) }

// claims are the parts of the payload compute_ctl reads. A claim of the wrong JSON type
// makes decoding fail, which counts as a failed verification (401), as in compute_ctl.
type claims struct {
	Expiry    *jwt.NumericDate `json:"exp"`
	ComputeID *string          `json:"compute_id"`
	Scope     *string          `json:"scope"`
	// Audience is an array of strings, as in compute_ctl (Option<Vec<String>>): a single
	// string, which RFC 7519 allows, fails decoding there and so here (401), whatever the
	// token's other claims.
	Audience *[]string `json:"aud"`
}

// Authorize checks the value of an Authorization header and returns nil when the request
// may go on, or the refusal to send. A nil Verifier refuses every token with 401.
func (v *Verifier) Authorize(header string) *Error {
	token, ok := bearer(header)
	if !ok {
		return &Error{Status: http.StatusBadRequest, Message: MsgInvalidToken}
	}
	if v == nil {
		return &Error{Status: http.StatusUnauthorized, Message: MsgVerifyFailed}
	}
	c, ok := v.verify(token)
	if !ok {
		return &Error{Status: http.StatusUnauthorized, Message: MsgVerifyFailed}
	}
	if c.Scope != nil {
		// verify() already refused any other scope value.
		if c.Audience == nil {
			return &Error{Status: http.StatusUnauthorized, Message: MsgMissingAudience}
		}
		if !slices.Contains(*c.Audience, Audience) {
			return &Error{Status: http.StatusUnauthorized, Message: MsgInvalidAudience}
		}
		return nil
	}
	if c.ComputeID == nil {
		return &Error{Status: http.StatusForbidden, Message: MsgMissingComputeID}
	}
	if *c.ComputeID != v.computeID {
		return &Error{Status: http.StatusForbidden, Message: MsgInvalidComputeID}
	}
	return nil
}

// bearer extracts the token of "Bearer <token>" (scheme case-insensitive, as the Rust
// headers crate).
func bearer(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimSpace(header[len(scheme):])
	return token, token != ""
}

var errExpired = errors.New("token expired")

// verify tries every key; the first one that verifies the signature and yields valid
// claims wins. A token verified before (by this Verifier: the same keys) is taken from
// the cache, its claims checked again against the clock.
func (v *Verifier) verify(token string) (claims, bool) {
	if c, ok := v.cache.get(token); ok {
		if v.check(c) != nil {
			v.cache.remove(token)
			return claims{}, false
		}
		return c, true
	}
	c, ok := v.verifySignature(token)
	if ok {
		v.cache.put(token, c, v.now())
	}
	return c, ok
}

// verifySignature parses the token and checks its signature and claims with every key.
func (v *Verifier) verifySignature(token string) (claims, bool) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return claims{}, false
	}
	for _, key := range v.keys {
		var c claims
		if err := tok.Claims(key, &c); err != nil {
			continue
		}
		if err := v.check(c); err != nil {
			continue
		}
		return c, true
	}
	return claims{}, false
}

func (v *Verifier) check(c claims) error {
	if c.Expiry != nil && v.now().After(c.Expiry.Time().Add(Leeway)) {
		return errExpired
	}
	if c.Scope != nil && *c.Scope != AdminScope {
		return fmt.Errorf("unknown scope")
	}
	return nil
}
