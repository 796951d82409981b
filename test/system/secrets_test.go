package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
)

// The secrets the system tests used: every password, password hash, token and JWT that
// went into a spec, a config, a request or an environment file is noted here when it is
// made, and TestMain checks the whole journal of the run for each of them once every
// test has finished (checkJournalSecrets). The journal is read in journalctl's export
// format: every field of every entry (MESSAGE and the structured ones, _CMDLINE
// included), not only what `-o cat` prints.
var secrets = struct {
	sync.Mutex
	m map[string]string // secret -> what it is
}{m: map[string]string{}}

// minSecretLen keeps short strings (which would match by chance) out of the check; every
// secret the tests make is longer.
const minSecretLen = 8

// noteSecret registers s (what says what it is) for the journal check.
func noteSecret(what, s string) {
	if len(s) < minSecretLen {
		return
	}
	secrets.Lock()
	defer secrets.Unlock()
	if _, ok := secrets.m[s]; !ok {
		secrets.m[s] = what
	}
}

// secretForms are the ways s could be spelt in a journal field: as is, and escaped as
// in JSON (a log line that quotes a value).
func secretForms(s string) []string {
	forms := []string{s}
	b, _ := json.Marshal(s)
	if q := string(b[1 : len(b)-1]); q != s {
		forms = append(forms, q)
	}
	if q := fmt.Sprintf("%q", s); q[1:len(q)-1] != s {
		forms = append(forms, q[1:len(q)-1])
	}
	return forms
}

// checkJournalSecrets reads the journal of this boot (the container is the run's own) and
// returns one line per secret found, naming the secret by what it is and the journal
// field it was in (never the secret itself). The journal export is kept in the out
// directory given by COMPUTE_SYSTEM_TEST_OUT, if set, for a look when the check fails.
func checkJournalSecrets() ([]string, error) {
	secrets.Lock()
	reg := maps.Clone(secrets.m)
	secrets.Unlock()
	return findInJournal(reg)
}

// findInJournal looks for every key of reg in the journal export.
func findInJournal(reg map[string]string) ([]string, error) {
	res, err := execx.Run(context.Background(), execx.Cmd{Path: "/bin/journalctl", Args: []string{"-b", "--no-pager", "-o", "export"}})
	if err != nil {
		return nil, fmt.Errorf("journalctl -o export: %w", err)
	}
	out := res.Stdout
	if len(out) == 0 {
		return nil, fmt.Errorf("journalctl -o export printed nothing")
	}
	var found []string
	for s, what := range reg {
		for _, f := range secretForms(s) {
			i := bytes.Index(out, []byte(f))
			if i < 0 {
				continue
			}
			found = append(found, fmt.Sprintf("%s (%d bytes) in the journal field %s", what, len(s), fieldAt(out, i)))
			break
		}
	}
	sort.Strings(found)
	if dir := os.Getenv("COMPUTE_SYSTEM_TEST_OUT"); dir != "" && len(found) > 0 {
		_ = os.WriteFile(filepath.Join(dir, "journal-export.bin"), out, 0o600)
	}
	return found, nil
}

// fieldAt names the export-format field that holds byte i: the text before '=' at the
// start of its line (binary fields are named on the line before their length).
func fieldAt(out []byte, i int) string {
	start := bytes.LastIndexByte(out[:i], '\n') + 1
	line := out[start:i]
	if k, _, ok := bytes.Cut(line, []byte("=")); ok {
		return string(k)
	}
	if start > 1 {
		prev := bytes.LastIndexByte(out[:start-1], '\n') + 1
		return strings.TrimSpace(string(out[prev : start-1]))
	}
	return "?"
}

func numSecrets() int {
	secrets.Lock()
	defer secrets.Unlock()
	return len(secrets.m)
}

// TestJournalSecretCheck shows that the check finds a secret that reached the journal:
// a canary (not registered, so that it does not fail the run) is logged through
// systemd-cat, in a message and in a structured field's JSON spelling.
func TestJournalSecretCheck(t *testing.T) {
	canary := "canary-" + randomHex(t, 12)
	quoted := canary + ` "q"`
	run(t, "/bin/sh", "-c", "echo 'secret check canary: "+canary+"' | /usr/bin/systemd-cat -t compute-e2e-canary")
	run(t, "/bin/sh", "-c", `echo 'msg="x" v="`+strings.ReplaceAll(quoted, `"`, `\"`)+`"' | /usr/bin/systemd-cat -t compute-e2e-canary`)
	reg := map[string]string{canary: "the canary", quoted: "the quoted canary"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		found, err := findInJournal(reg)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 2 {
			t.Logf("found: %q", found)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the secret check found %q of 2 canaries in the journal", found)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if found, err := findInJournal(map[string]string{"canary-" + randomHex(t, 12): "an unused canary"}); err != nil || len(found) != 0 {
		t.Fatalf("an unused canary: %q %v", found, err)
	}
}
