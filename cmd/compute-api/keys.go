package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// extractJWKS pulls compute_ctl_config.jwks out of a config file without judging the
// spec, so that a config with a bad spec still lets the API authenticate.
func extractJWKS(b []byte) (json.RawMessage, error) {
	var c struct {
		ComputeCtlConfig *struct {
			JWKS json.RawMessage `json:"jwks"`
		} `json:"compute_ctl_config"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if c.ComputeCtlConfig == nil || len(c.ComputeCtlConfig.JWKS) == 0 {
		return nil, fmt.Errorf("missing compute_ctl_config.jwks")
	}
	return c.ComputeCtlConfig.JWKS, nil
}

type keygenCmd struct {
	KeyOut  string `required:"" help:"Where to write the private key (PEM, mode 0600)."`
	JWKSOut string `name:"jwks-out" required:"" help:"Where to write the JWKS (public key) for compute_ctl_config.jwks."`
}

// Run writes a key the way Neon's neon_local makes them: OKP/Ed25519 with kid =
// base64url(sha256(public key)).
func (k keygenCmd) Run() error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	if err := os.WriteFile(k.KeyOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	sum := sha256.Sum256(pub)
	jwk := jose.JSONWebKey{Key: pub, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), Algorithm: string(jose.EdDSA), Use: "sig"}
	b, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(k.JWKSOut, append(b, '\n'), 0o644)
}

type tokenCmd struct {
	Key       string        `required:"" help:"Private key file made by keygen."`
	ComputeID string        `name:"compute-id" help:"compute_id claim (for /status, /configure)."`
	Admin     bool          `help:"Admin scope with aud [\"compute\"] (for /terminate)."`
	TTL       time.Duration `default:"1h" help:"Lifetime (exp claim); 0 for none."`
}

func (t tokenCmd) Run() error {
	b, err := os.ReadFile(t.Key)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("read key: not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return fmt.Errorf("parse key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return fmt.Errorf("parse key: not an Ed25519 key")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return err
	}
	claims := map[string]any{}
	if t.ComputeID != "" {
		claims["compute_id"] = t.ComputeID
	}
	if t.Admin {
		claims["scope"] = "compute_ctl:admin"
		claims["aud"] = []string{"compute"}
	}
	if t.TTL > 0 {
		claims["exp"] = time.Now().Add(t.TTL).Unix()
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
