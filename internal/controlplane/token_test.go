package controlplane

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadToken(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	creds := t.TempDir()
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(creds, TokenCredential), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing anywhere: no token, no warning; one line that says where a token belongs
	// and that the units load it after a daemon-reload (the generator's drop-ins).
	if tok, err := LoadToken("", "", log); err != nil || tok != "" || strings.Contains(logBuf.String(), "level=WARN") ||
		!strings.Contains(logBuf.String(), "daemon-reload") || !strings.Contains(logBuf.String(), TokenCredential) {
		t.Fatalf("nothing: %q, %v, log %q", tok, err, logBuf.String())
	}
	if tok, err := LoadToken(creds, "", log); err != nil || tok != "" {
		t.Fatalf("empty credentials directory: %q, %v", tok, err)
	}

	// The environment only: used, with a warning that never quotes it.
	logBuf.Reset()
	if tok, err := LoadToken(creds, "env-secret", log); err != nil || tok != "env-secret" {
		t.Fatalf("environment: %q, %v", tok, err)
	}
	if !strings.Contains(logBuf.String(), "level=WARN") || !strings.Contains(logBuf.String(), TokenCredential) || strings.Contains(logBuf.String(), "env-secret") {
		t.Errorf("warning for the environment variable: %q", logBuf.String())
	}

	// The credential wins over the environment.
	write("cred-secret\n")
	logBuf.Reset()
	if tok, err := LoadToken(creds, "env-secret", log); err != nil || tok != "cred-secret" {
		t.Fatalf("credential: %q, %v", tok, err)
	}
	if !strings.Contains(logBuf.String(), "ignored") || strings.Contains(logBuf.String(), "secret\"") {
		t.Errorf("log %q", logBuf.String())
	}

	for _, bad := range []string{"", "\n", "two\nlines\n", strings.Repeat("x", maxToken+1)} {
		write(bad)
		if tok, err := LoadToken(creds, "", log); err == nil {
			t.Errorf("credential %.20q: accepted as %.20q", bad, tok)
		}
	}
}
