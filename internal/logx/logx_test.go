package logx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPriority(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  int
	}{
		{slog.LevelDebug - 4, 7},
		{slog.LevelDebug, 7},
		{slog.LevelInfo - 1, 7},
		{slog.LevelInfo, 6},
		{slog.LevelInfo + 1, 5},
		{slog.LevelInfo + 2, 5},
		{slog.LevelWarn, 4},
		{slog.LevelWarn + 1, 4},
		{slog.LevelError, 3},
		{slog.LevelError + 4, 3},
	} {
		if got := Priority(tc.level); got != tc.want {
			t.Errorf("Priority(%s) = %d, want %d", tc.level, got, tc.want)
		}
	}
}

func TestPlainText(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, "compute-x", Options{Journal: JournalOff, Level: slog.LevelInfo})
	l.Debug("hidden")
	l.Warn("disk nearly full", "err", errors.New("boom"))
	Milestone(l, MsgRunning, "compute is running", "status", "running")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q, want 2", lines)
	}
	if !regexp.MustCompile(`^time=\S+ level=WARN msg="disk nearly full" component=compute-x err=boom$`).MatchString(lines[0]) {
		t.Errorf("line %q", lines[0])
	}
	if !regexp.MustCompile(`^time=\S+ level=INFO msg="compute is running" component=compute-x status=running$`).MatchString(lines[1]) {
		t.Errorf("milestone line %q (no MESSAGE_ID in the text)", lines[1])
	}
}

// journalSocket listens like journald's native socket in a temporary directory.
func journalSocket(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

// readEntry reads one native entry and decodes its fields.
func readEntry(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<16)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no journal entry: %v", err)
	}
	fields, err := decodeEntry(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return fields
}

func decodeEntry(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i < 0 {
			return nil, fmt.Errorf("truncated field %q", b)
		}
		name := string(b[:i])
		if b[i] == '=' {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				return nil, fmt.Errorf("unterminated field %s", name)
			}
			out[name] = string(b[i+1 : i+j])
			b = b[i+j+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			return nil, fmt.Errorf("short length of %s", name)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return nil, fmt.Errorf("bad binary field %s", name)
		}
		out[name] = string(b[:n])
		b = b[n+1:]
	}
	return out, nil
}

func TestJournalPriorityPrefix(t *testing.T) {
	path, _ := journalSocket(t)
	var buf bytes.Buffer
	l := New(&buf, "compute-x", Options{Journal: JournalOn, JournalSocket: path, Level: slog.LevelDebug})
	l.Debug("d")
	l.Info("i", "k", "v")
	l.Warn("w")
	l.Error("e", "err", "x")
	want := "<7>level=DEBUG msg=d component=compute-x\n" +
		"<6>level=INFO msg=i component=compute-x k=v\n" +
		"<4>level=WARN msg=w component=compute-x\n" +
		"<3>level=ERROR msg=e component=compute-x err=x\n"
	if buf.String() != want {
		t.Fatalf("journal stream\n got %q\nwant %q", buf.String(), want)
	}
}

func TestMilestoneGoesToNativeJournal(t *testing.T) {
	path, sock := journalSocket(t)
	var buf bytes.Buffer
	l := New(&buf, "compute-x", Options{Journal: JournalOn, JournalSocket: path}).With("unit", "u")
	Milestone(l, MsgRunning, "compute is running", "status", "running")
	Milestone(l, MsgFailed, "compute failed", "err", "postgres did not come up\nsee the log")
	l.Info("after")

	e := readEntry(t, sock)
	want := map[string]string{
		"MESSAGE":           "level=INFO msg=\"compute is running\" component=compute-x unit=u status=running",
		"PRIORITY":          "6",
		"MESSAGE_ID":        string(MsgRunning),
		"SYSLOG_IDENTIFIER": "compute-x",
	}
	if fmt.Sprint(e) != fmt.Sprint(want) {
		t.Errorf("entry\n got %v\nwant %v", e, want)
	}
	e = readEntry(t, sock)
	if e["MESSAGE_ID"] != string(MsgFailed) || e["PRIORITY"] != "3" ||
		e["MESSAGE"] != `level=ERROR msg="compute failed" component=compute-x unit=u err="postgres did not come up\nsee the log"` {
		t.Errorf("failed entry %v", e)
	}
	// Milestones are not also on the stream (no duplicate entries); other lines are.
	if got, want := buf.String(), "<6>level=INFO msg=after component=compute-x unit=u\n"; got != want {
		t.Errorf("stream %q, want %q", got, want)
	}
}

func TestMilestoneFallsBackToStream(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, "compute-x", Options{Journal: JournalOn, JournalSocket: filepath.Join(t.TempDir(), "none")})
	Milestone(l, MsgTerminated, "compute terminated")
	if got, want := buf.String(), "<6>level=INFO msg=\"compute terminated\" component=compute-x\n"; got != want {
		t.Errorf("stream %q, want %q", got, want)
	}
}

func TestEncodeEntryBinaryField(t *testing.T) {
	b := encodeEntry([]field{{"A", "x"}, {"MESSAGE", "two\nlines"}})
	want := append([]byte("A=x\nMESSAGE\n"), 9, 0, 0, 0, 0, 0, 0, 0)
	want = append(want, "two\nlines\n"...)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded %q, want %q", b, want)
	}
	got, err := decodeEntry(b)
	if err != nil || got["A"] != "x" || got["MESSAGE"] != "two\nlines" {
		t.Fatalf("decoded %v, %v", got, err)
	}
}

func TestMilestoneIDs(t *testing.T) {
	seen := map[MessageID]bool{}
	re := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, id := range Milestones {
		if !re.MatchString(string(id)) {
			t.Errorf("MESSAGE_ID %q is not 128-bit lowercase hex", id)
		}
		if seen[id] {
			t.Errorf("MESSAGE_ID %s used twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 6 {
		t.Errorf("%d milestones, want 6", len(seen))
	}
	if MsgFailed.Level() != slog.LevelError || MsgRunning.Level() != slog.LevelInfo {
		t.Error("milestone levels")
	}
}

func TestUnderJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", "")
	if UnderJournal(f) || UnderJournal(&bytes.Buffer{}) {
		t.Error("under the journal without JOURNAL_STREAM")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !UnderJournal(f) {
		t.Error("the stream JOURNAL_STREAM names is not taken for the journal")
	}
	if !UnderJournal(&bytes.Buffer{}) {
		t.Error("a writer that is not a file is not taken for the journal with JOURNAL_STREAM set")
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	if UnderJournal(f) {
		t.Error("a file JOURNAL_STREAM does not name taken for the journal")
	}
}

func TestAutoJournal(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "8:9")
	var buf bytes.Buffer
	New(&buf, "c", Options{}).Info("hi")
	if got := buf.String(); got != "<6>level=INFO msg=hi component=c\n" {
		t.Errorf("under journald: %q", got)
	}
	t.Setenv("JOURNAL_STREAM", "")
	buf.Reset()
	New(&buf, "c", Options{}).Info("hi")
	if !strings.HasPrefix(buf.String(), "time=") {
		t.Errorf("outside journald: %q", buf.String())
	}
}

func TestLevelFromEnv(t *testing.T) {
	for v, want := range map[string]slog.Level{"": slog.LevelInfo, "DEBUG": slog.LevelDebug, "warning": slog.LevelWarn,
		"warn": slog.LevelWarn, "error": slog.LevelError, "bogus": slog.LevelInfo} {
		t.Setenv("COMPUTE_LOG_LEVEL", v)
		if got := levelFromEnv(); got != want {
			t.Errorf("COMPUTE_LOG_LEVEL=%q: %s, want %s", v, got, want)
		}
	}
}

// The milestone ids are documented where operators look for them.
func TestMilestonesDocumented(t *testing.T) {
	for _, doc := range []string{"../../docs/architecture.md", "../../README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range Milestones {
			if !bytes.Contains(b, []byte(id)) {
				t.Errorf("%s does not list MESSAGE_ID %s", doc, id)
			}
		}
	}
}

// A milestone is logged whatever the level: with COMPUTE_LOG_LEVEL=error the running
// milestone still shows, while ordinary info and warning lines do not.
func TestMilestoneIgnoresLevel(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, "compute-x", Options{Journal: JournalOff, Level: slog.LevelError})
	l.Info("hidden")
	l.Warn("hidden too")
	Milestone(l, MsgRunning, "compute is running")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `msg="compute is running"`) {
		t.Errorf("lines %q, want only the milestone", lines)
	}
}
