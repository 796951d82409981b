package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// GenerateKey makes an Ed25519 key the way Neon's neon_local does: the private key as a
// PKCS #8 PEM block, and the public key as a JWKS (for compute_ctl_config.jwks) with one
// OKP key, alg EdDSA, use sig and kid = base64url(sha256(public key)).
func GenerateKey() (privatePEM, jwks []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(pub)
	jwk := jose.JSONWebKey{Key: pub, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), Algorithm: string(jose.EdDSA), Use: "sig"}
	b, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), append(b, '\n'), nil
}

// TokenClaims are the claims of a token minted by MintToken.
type TokenClaims struct {
	// ComputeID, if set, is the compute_id claim (for /status, /configure).
	ComputeID string
	// Admin adds the admin scope with aud ["compute"] (for /terminate).
	Admin bool
	// TTL, if positive, sets exp to now + TTL.
	TTL time.Duration
}

// MintToken signs a JWT (EdDSA) with a private key made by GenerateKey.
func MintToken(privatePEM []byte, c TokenClaims, now time.Time) (string, error) {
	blk, _ := pem.Decode(privatePEM)
	if blk == nil {
		return "", fmt.Errorf("read key: not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("parse key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return "", fmt.Errorf("parse key: not an Ed25519 key")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	claims := map[string]any{}
	if c.ComputeID != "" {
		claims["compute_id"] = c.ComputeID
	}
	if c.Admin {
		claims["scope"] = AdminScope
		claims["aud"] = []string{Audience}
	}
	if c.TTL > 0 {
		claims["exp"] = now.Add(c.TTL).Unix()
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}
