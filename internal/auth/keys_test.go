package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGenerateKeyAndMintToken(t *testing.T) {
	key, jwks, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(key); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("private key is not a PKCS #8 PEM block: %q", key)
	}
	var set struct {
		Keys []struct {
			Kty, Crv, Alg, Use, Kid, X string
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks %s: %v", jwks, err)
	}
	k := set.Keys[0]
	if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" {
		t.Errorf("jwk %+v", k)
	}
	pub, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	if k.Kid != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("kid %s is not base64url(sha256(public key))", k.Kid)
	}
	if !strings.HasSuffix(string(jwks), "}\n") {
		t.Error("jwks does not end with a newline")
	}

	v, err := NewVerifier(jwks, "c1")
	if err != nil || v.Keys() != 1 {
		t.Fatalf("verifier: %v", err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name   string
		claims TokenClaims
		now    time.Time
		status int // 0: accepted
	}{
		{"compute token", TokenClaims{ComputeID: "c1", TTL: time.Hour}, now, 0},
		{"admin token", TokenClaims{Admin: true, TTL: time.Hour}, now, 0},
		{"no expiry", TokenClaims{ComputeID: "c1"}, now, 0},
		{"other compute", TokenClaims{ComputeID: "c2", TTL: time.Hour}, now, http.StatusForbidden},
		{"no claims", TokenClaims{}, now, http.StatusForbidden},
		{"expired", TokenClaims{ComputeID: "c1", TTL: time.Minute}, now.Add(-time.Hour), http.StatusUnauthorized},
	} {
		tok, err := MintToken(key, tc.claims, tc.now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		e := v.Authorize("Bearer " + tok)
		switch {
		case tc.status == 0 && e != nil:
			t.Errorf("%s refused: %v", tc.name, e)
		case tc.status != 0 && (e == nil || e.Status != tc.status):
			t.Errorf("%s: %v, want status %d", tc.name, e, tc.status)
		}
	}
}

func TestMintTokenBadKeys(t *testing.T) {
	if _, err := MintToken([]byte("not a key"), TokenClaims{}, time.Now()); err == nil || err.Error() != "read key: not PEM" {
		t.Errorf("not PEM: %v", err)
	}
	bad := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	if _, err := MintToken(bad, TokenClaims{}, time.Now()); err == nil || !strings.HasPrefix(err.Error(), "parse key:") {
		t.Errorf("garbage: %v", err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if _, err := MintToken(rsaPEM, TokenClaims{}, time.Now()); err == nil || err.Error() != "parse key: not an Ed25519 key" {
		t.Errorf("RSA key: %v", err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ = x509.MarshalPKCS8PrivateKey(priv)
	if _, err := MintToken(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), TokenClaims{Admin: true}, time.Now()); err != nil {
		t.Errorf("Ed25519 key: %v", err)
	}
}
