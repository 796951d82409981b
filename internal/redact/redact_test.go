package redact

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		secrets  []string
		want     string
	}{
		{"no secrets", "password=hunter2", nil, "password=hunter2"},
		{"empty secret ignored", "abc", []string{""}, "abc"},
		{"every occurrence", "tok tok tok", []string{"tok"}, "<redacted> <redacted> <redacted>"},
		{"several secrets", "user a:b token c", []string{"b", "c"}, "user a:<redacted> token <redacted>"},
		{"absent secret", "nothing here", []string{"secret"}, "nothing here"},
		{"longest first", "abcd abc", []string{"abc", "abcd"}, "<redacted> <redacted>"},
		{"no secret inside the mark", "x red y", []string{"red", "dac"}, "x <redacted> y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in, tc.secrets...); got != tc.want {
				t.Errorf("String(%q, %q) = %q, want %q", tc.in, tc.secrets, got, tc.want)
			}
		})
	}
}

func TestError(t *testing.T) {
	if Error(nil, "x") != nil {
		t.Error("Error(nil) is not nil")
	}
	clean := fmt.Errorf("read: %w", io.EOF)
	if got := Error(clean, "secret"); got != clean || !errors.Is(got, io.EOF) {
		t.Errorf("an error without the secret changed: %v", got)
	}
	if got := Error(clean, ""); got != clean {
		t.Errorf("an empty secret changed the error: %v", got)
	}
	leaky := fmt.Errorf("connect with token s3cr3t: %w", io.EOF)
	got := Error(leaky, "s3cr3t")
	if got.Error() != "connect with token <redacted>: EOF" {
		t.Errorf("redacted text %q", got)
	}
	if errors.Is(got, io.EOF) {
		t.Error("the redacted error still carries the original chain")
	}
}
