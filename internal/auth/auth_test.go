package auth

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const computeID = "compute-abc"

var testNow = time.Date(2025, 7, 17, 12, 0, 0, 0, time.UTC)

type keyPair struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKey(t *testing.T) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pub, priv}
}

// neonJWK renders a public key the way Neon's control plane writes it.
func neonJWK(kid string, pub ed25519.PublicKey) string {
	return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q,"kid":%q,"alg":"EdDSA","use":"sig","key_ops":["verify"]}`,
		base64.RawURLEncoding.EncodeToString(pub), kid)
}

func jwks(keys ...string) json.RawMessage {
	return json.RawMessage(`{"keys":[` + strings.Join(keys, ",") + `]}`)
}

func sign(t *testing.T, priv ed25519.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestAuthorize(t *testing.T) {
	good := newKey(t)
	other := newKey(t)
	v, err := NewVerifier(jwks(neonJWK("k1", good.pub)), computeID, WithClock(func() time.Time { return testNow }), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if v.Keys() != 1 {
		t.Fatalf("keys = %d, want 1", v.Keys())
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rsaKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rsToken, err := jwt.Signed(rsSigner).Claims(map[string]any{"compute_id": computeID}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	// An HS256 token "signed" with the public key bytes: the classic algorithm confusion.
	hsToken := hs256(t, good.pub, `{"compute_id":"`+computeID+`"}`)

	tok := func(c map[string]any) string { return "Bearer " + sign(t, good.priv, c) }
	past := func(d time.Duration) int64 { return testNow.Add(-d).Unix() }

	tests := []struct {
		name   string
		header string
		status int // 0 = authorized
		msg    string
	}{
		{"no header", "", 400, MsgInvalidToken},
		{"basic scheme", "Basic x", 400, MsgInvalidToken},
		{"bearer without token", "Bearer ", 400, MsgInvalidToken},
		{"bearer only", "Bearer", 400, MsgInvalidToken},
		{"garbage token", "Bearer not.a.jwt", 401, MsgVerifyFailed},
		{"valid compute_id", tok(map[string]any{"compute_id": computeID}), 0, ""},
		{"scheme is case-insensitive", "bearer " + sign(t, good.priv, map[string]any{"compute_id": computeID}), 0, ""},
		{"wrong compute_id", tok(map[string]any{"compute_id": "compute-other"}), 403, MsgInvalidComputeID},
		{"no claims", tok(map[string]any{}), 403, MsgMissingComputeID},
		{"null compute_id", tok(map[string]any{"compute_id": nil}), 403, MsgMissingComputeID},
		{"compute_id of wrong type", tok(map[string]any{"compute_id": 42}), 401, MsgVerifyFailed},
		{"admin with aud compute", tok(map[string]any{"scope": AdminScope, "aud": []string{"compute"}}), 0, ""},
		{"admin with aud list containing compute", tok(map[string]any{"scope": AdminScope, "aud": []string{"x", "compute"}}), 0, ""},
		{"admin ignores compute_id", tok(map[string]any{"scope": AdminScope, "aud": []string{"compute"}, "compute_id": "nope"}), 0, ""},
		// compute_ctl's claims take aud as a list only: a string fails decoding (401).
		{"admin with aud as single string", tok(map[string]any{"scope": AdminScope, "aud": "compute"}), 401, MsgVerifyFailed},
		{"compute_id with aud as single string", tok(map[string]any{"compute_id": computeID, "aud": "compute"}), 401, MsgVerifyFailed},
		{"admin with aud null", tok(map[string]any{"scope": AdminScope, "aud": nil}), 401, MsgMissingAudience},
		{"admin without aud", tok(map[string]any{"scope": AdminScope}), 401, MsgMissingAudience},
		{"admin with aud other", tok(map[string]any{"scope": AdminScope, "aud": []string{"other"}}), 401, MsgInvalidAudience},
		{"unknown scope", tok(map[string]any{"scope": "compute_ctl:user", "compute_id": computeID}), 401, MsgVerifyFailed},
		{"empty scope", tok(map[string]any{"scope": "", "compute_id": computeID}), 401, MsgVerifyFailed},
		{"expired beyond leeway", tok(map[string]any{"compute_id": computeID, "exp": past(61 * time.Second)}), 401, MsgVerifyFailed},
		{"expired within leeway", tok(map[string]any{"compute_id": computeID, "exp": past(30 * time.Second)}), 0, ""},
		{"exp in the future", tok(map[string]any{"compute_id": computeID, "exp": testNow.Add(time.Hour).Unix()}), 0, ""},
		{"nbf in the future is not checked", tok(map[string]any{"compute_id": computeID, "nbf": testNow.Add(time.Hour).Unix()}), 0, ""},
		{"key not in jwks", "Bearer " + sign(t, other.priv, map[string]any{"compute_id": computeID}), 401, MsgVerifyFailed},
		{"RS256 rejected", "Bearer " + rsToken, 401, MsgVerifyFailed},
		{"HS256 rejected", "Bearer " + hsToken, 401, MsgVerifyFailed},
		{"tampered payload", "Bearer " + tamper(sign(t, good.priv, map[string]any{"compute_id": "compute-other"})), 401, MsgVerifyFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := v.Authorize(tc.header)
			if tc.status == 0 {
				if got != nil {
					t.Fatalf("refused with %d %q, want authorized", got.Status, got.Message)
				}
				return
			}
			if got == nil {
				t.Fatalf("authorized, want %d %q", tc.status, tc.msg)
			}
			if got.Status != tc.status || got.Message != tc.msg {
				t.Fatalf("got %d %q, want %d %q", got.Status, got.Message, tc.status, tc.msg)
			}
		})
	}
}

// tamper swaps the payload of a signed token for another one, keeping the signature.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"compute_id":"` + computeID + `"}`))
	return strings.Join(parts, ".")
}

func hs256(t *testing.T, secret []byte, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

func TestKeySets(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, err := json.Marshal(jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "rsa", Algorithm: "RS256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	badKey := `{"kty":"OKP","crv":"Ed25519","x":"!!!not-base64!!!","kid":"bad"}`
	tokenK1 := "Bearer " + sign(t, k1.priv, map[string]any{"compute_id": computeID})
	tokenK2 := "Bearer " + sign(t, k2.priv, map[string]any{"compute_id": computeID})

	tests := []struct {
		name     string
		set      json.RawMessage
		keys     int
		okTokens []string
		badToken []string
	}{
		{"one bad key and one good key", jwks(badKey, neonJWK("good", k1.pub)), 1, []string{tokenK1}, []string{tokenK2}},
		{"rsa key skipped", jwks(string(rsaJWK), neonJWK("good", k1.pub)), 1, []string{tokenK1}, []string{tokenK2}},
		{"every key is tried", jwks(neonJWK("a", k1.pub), neonJWK("b", k2.pub)), 2, []string{tokenK1, tokenK2}, nil},
		{"kid is not used to pick the key", jwks(neonJWK("a", k2.pub), neonJWK("a", k1.pub)), 2, []string{tokenK1, tokenK2}, nil},
		{"empty key list", jwks(), 0, nil, []string{tokenK1}},
		{"empty object", json.RawMessage(`{}`), 0, nil, []string{tokenK1}},
		{"null", json.RawMessage(`null`), 0, nil, []string{tokenK1}},
		{"absent", nil, 0, nil, []string{tokenK1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.set, computeID, WithLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			if v.Keys() != tc.keys {
				t.Fatalf("keys = %d, want %d", v.Keys(), tc.keys)
			}
			for _, h := range tc.okTokens {
				if e := v.Authorize(h); e != nil {
					t.Errorf("refused a valid token: %d %q", e.Status, e.Message)
				}
			}
			for _, h := range tc.badToken {
				e := v.Authorize(h)
				if e == nil || e.Status != http.StatusUnauthorized || e.Message != MsgVerifyFailed {
					t.Errorf("got %+v, want 401 %q", e, MsgVerifyFailed)
				}
			}
		})
	}
}

func TestNewVerifierRejectsMalformedSet(t *testing.T) {
	for _, set := range []string{`{"keys": 5}`, `[`, `"x"`} {
		if _, err := NewVerifier(json.RawMessage(set), computeID, WithLogger(quiet())); err == nil {
			t.Errorf("NewVerifier(%s) succeeded, want an error", set)
		}
	}
}

func TestNilVerifier(t *testing.T) {
	var v *Verifier
	if e := v.Authorize("Bearer x"); e == nil || e.Status != 401 {
		t.Fatalf("got %+v, want 401", e)
	}
	if e := v.Authorize(""); e == nil || e.Status != 400 {
		t.Fatalf("got %+v, want 400", e)
	}
}

// The skipped-key log line names the kid and never carries key material or tokens.
func TestSkippedKeyIsLoggedByKid(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if _, err := NewVerifier(jwks(`{"kty":"OKP","crv":"Ed25519","x":"@@","kid":"broken-1"}`), computeID, WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "kid=broken-1") {
		t.Fatalf("log %q does not name the kid", buf.String())
	}
}
