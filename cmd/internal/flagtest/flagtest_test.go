package flagtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// recorder is a testing.TB that keeps the errors instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// The check fails on a default that is not the shared one, on one missing from the vars
// and on a wanted flag that does not exist, and passes a correct command line.
func TestCheckDefaults(t *testing.T) {
	var c struct {
		Dir  string `env:"DIR" default:"${DIR}"`
		Port int    `env:"PORT" default:"5432"`
		Mode string `env:"MODE" default:"fast"`
		Free string `env:"FREE"`
	}
	k, err := kong.New(&c, kong.Vars{"DIR": "/run/x"})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	CheckDefaults(r, k.Model.Node, map[string]string{"DIR": "/run/x", "PORT": "55432"},
		map[string]string{"dir": "/run/x", "missing": "1"})
	got := strings.Join(r.errs, "\n")
	for _, want := range []string{`--port default "5432", paths.Vars()[PORT] = "55432"`,
		`--mode (MODE) has default "fast" that is not in paths.Vars`, "no flag --missing"} {
		if !strings.Contains(got, want) {
			t.Errorf("no error %q in:\n%s", want, got)
		}
	}
	if len(r.errs) != 3 {
		t.Errorf("%d errors, want 3:\n%s", len(r.errs), got)
	}

	ok := &recorder{TB: t}
	CheckDefaults(ok, k.Model.Node, map[string]string{"DIR": "/run/x", "PORT": "5432", "MODE": "fast"},
		map[string]string{"dir": "/run/x", "port": "5432"})
	if len(ok.errs) != 0 {
		t.Errorf("a correct command line: %v", ok.errs)
	}
}
