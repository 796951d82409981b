package controlplane

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// TokenCredential is the systemd credential that holds the control-plane token:
// compute-init.service and compute-api.service load it (LoadCredential=, searched in
// /etc/credstore/, /run/credstore/ and /usr/lib/credstore/; or LoadCredentialEncrypted=
// from credstore.encrypted/) through drop-ins that compute-tools-generator writes when
// the credential is there, and only they can read it, in $CREDENTIALS_DIRECTORY.
const TokenCredential = "compute-control-plane-token"

// TokenEnv is the environment variable that carried the token before the credential
// (compute_ctl's NEON_CONTROL_PLANE_TOKEN). It is still read, with a warning: set in
// /etc/default/compute-tools it is readable by every local user and reaches every unit.
const TokenEnv = "NEON_CONTROL_PLANE_TOKEN"

// maxToken bounds what is read from the credential; a token is far smaller.
const maxToken = 64 << 10

// LoadToken returns the control-plane token: the credential TokenCredential in credsDir
// (the process's $CREDENTIALS_DIRECTORY; "" when it has none), trailing line breaks
// removed; otherwise envToken (the value of TokenEnv) with a warning; otherwise "".
// log never receives the token.
func LoadToken(credsDir, envToken string, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.Default()
	}
	if credsDir != "" {
		p := filepath.Join(credsDir, TokenCredential)
		b, err := readBounded(p)
		switch {
		case err == nil:
			tok := strings.TrimRight(string(b), "\r\n")
			if tok == "" || strings.ContainsAny(tok, "\r\n\x00") {
				return "", fmt.Errorf("credential %s: want one line with the token", TokenCredential)
			}
			if envToken != "" {
				log.Warn(TokenEnv + " is set but ignored: the credential " + TokenCredential + " wins; remove the variable from /etc/default/compute-tools (/etc/sysconfig/compute-tools from the .rpm)")
			}
			return tok, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("credential %s: %w", TokenCredential, err)
		}
	}
	if envToken != "" {
		log.Warn("the control-plane token comes from "+TokenEnv+" in the environment: /etc/default/compute-tools (/etc/sysconfig/compute-tools from the .rpm) is readable by every local user and loaded by every unit; "+
			"move it to the systemd credential "+TokenCredential+" (README, Configuration) and remove the variable",
			"credential", TokenCredential)
		return envToken, nil
	}
	log.Info("no control-plane token: requests to the control plane go without one; a token belongs in the systemd credential "+TokenCredential+
		" (README, Configuration), which the units load after `systemctl daemon-reload` once it is in /etc/credstore",
		"credential", TokenCredential)
	return "", nil
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxToken {
		return nil, fmt.Errorf("larger than %d bytes", maxToken)
	}
	return b, nil
}
