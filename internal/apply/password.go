package apply

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/computetools/compute-tools/internal/pg"
	"github.com/computetools/compute-tools/internal/spec"
)

const scramPrefix = "SCRAM-SHA-256"

// password is a spec role's password, validated and rendered.
type password struct {
	// sql is what follows PASSWORD: a literal or NULL.
	sql string
	// stored is what pg_authid.rolpassword will hold afterwards (nil for NULL).
	stored *string
	// redact lists the strings that must never appear in logs or errors.
	redact []string
}

// rolePassword validates and renders r.EncryptedPassword. Errors name the role, never the
// value. A value Postgres would not recognize as a hash is refused: Postgres would take it
// for a clear-text password and hash it, leaving the role with a password nobody knows.
func rolePassword(r spec.Role) (password, error) {
	if r.EncryptedPassword == nil {
		return password{sql: "NULL"}, nil
	}
	v := *r.EncryptedPassword
	var stored string
	switch {
	case strings.HasPrefix(v, scramPrefix):
		if !validSCRAM(v) {
			return password{}, fmt.Errorf("role %q: encrypted_password starts with %s but is not a valid SCRAM-SHA-256 verifier", r.Name, scramPrefix)
		}
		stored = v
	default:
		if !validMD5Hex(v) {
			return password{}, fmt.Errorf("role %q: encrypted_password is neither a SCRAM-SHA-256 verifier nor an md5 hash of 32 hex digits", r.Name)
		}
		// Postgres only recognizes lower-case md5 hashes.
		stored = "md5" + strings.ToLower(v)
	}
	lit, err := pg.Literal(stored)
	if err != nil {
		return password{}, fmt.Errorf("role %q: encrypted_password: %w", r.Name, err)
	}
	redact := []string{v}
	if stored != v {
		redact = append(redact, stored)
	}
	return password{sql: lit, stored: &stored, redact: redact}, nil
}

func validMD5Hex(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// validSCRAM checks the form Postgres parses (parse_scram_secret):
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64 parts, 32-byte keys.
func validSCRAM(s string) bool {
	parts := strings.Split(s, "$")
	if len(parts) != 3 || parts[0] != scramPrefix {
		return false
	}
	iterSalt := strings.SplitN(parts[1], ":", 2)
	keys := strings.SplitN(parts[2], ":", 2)
	if len(iterSalt) != 2 || len(keys) != 2 {
		return false
	}
	if n, err := strconv.ParseInt(iterSalt[0], 10, 32); err != nil || n <= 0 {
		return false
	}
	if salt, err := base64.StdEncoding.DecodeString(iterSalt[1]); err != nil || len(salt) == 0 {
		return false
	}
	for _, k := range keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(b) != 32 {
			return false
		}
	}
	return true
}

// samePassword compares a stored password with the one a spec role will store.
func samePassword(stored, want *string) bool {
	if stored == nil || want == nil {
		return stored == nil && want == nil
	}
	return *stored == *want
}
