package logx

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// UnderJournal reports whether w is the journald stream systemd connected this process
// to: JOURNAL_STREAM is set and, when w is a file, names its device and inode.
func UnderJournal(w io.Writer) bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return true
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return v == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// field is one journal field.
type field struct{ name, value string }

// nativeJournal sends entries over journald's native protocol: one datagram per entry,
// "NAME=value\n" per field, or for a value with a newline "NAME\n", its length as 64-bit
// little endian, the value and "\n".
type nativeJournal struct {
	path string
	conn *net.UnixConn
}

func (j *nativeJournal) send(fs []field) error {
	if j.conn == nil {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.path, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("connect to the journal: %w", err)
		}
		j.conn = c
	}
	if _, err := j.conn.Write(encodeEntry(fs)); err != nil {
		// Reconnect next time: journald may have restarted.
		j.conn.Close()
		j.conn = nil
		return fmt.Errorf("send to the journal: %w", err)
	}
	return nil
}

func encodeEntry(fs []field) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f.name...)
		if !strings.Contains(f.value, "\n") {
			b = append(b, '=')
			b = append(b, f.value...)
			b = append(b, '\n')
			continue
		}
		b = append(b, '\n')
		b = binary.LittleEndian.AppendUint64(b, uint64(len(f.value)))
		b = append(b, f.value...)
		b = append(b, '\n')
	}
	return b
}
