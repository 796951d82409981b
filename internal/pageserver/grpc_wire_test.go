package pageserver

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/computetools/compute-tools/internal/pageserver/pageapi"
)

// The hand-written encoding is held to the code generated from our .proto: the requests
// are byte for byte what proto.Marshal makes, and the answers that proto.Marshal makes
// decode to the same values.
func TestHandEncodingMatchesGeneratedCode(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	for _, tc := range []struct {
		lsn     uint64
		replica bool
	}{{0, false}, {0x16B5A50, false}, {1 << 40, true}, {0, true}} {
		want, err := det.Marshal(&pageapi.GetBaseBackupRequest{Lsn: tc.lsn, Replica: tc.replica,
			Compression: pageapi.BaseBackupCompression_BASE_BACKUP_COMPRESSION_GZIP})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeGetBaseBackupRequest(tc.lsn, tc.replica); !bytes.Equal(got, want) {
			t.Errorf("GetBaseBackupRequest(%d, %v) = %x, want %x", tc.lsn, tc.replica, got, want)
		}
		want, err = det.Marshal(&pageapi.LeaseLsnRequest{Lsn: tc.lsn})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeLeaseLsnRequest(tc.lsn); !bytes.Equal(got, want) {
			t.Errorf("LeaseLsnRequest(%d) = %x, want %x", tc.lsn, got, want)
		}
	}

	for _, chunk := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0x1f, 0x8b}, 40000)} {
		b, err := proto.Marshal(&pageapi.GetBaseBackupResponseChunk{Chunk: chunk})
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeChunk(b)
		if err != nil || !bytes.Equal(got, chunk) {
			t.Errorf("chunk of %d bytes decoded to %d bytes, %v", len(chunk), len(got), err)
		}
	}

	for _, exp := range []time.Time{time.Unix(1764000000, 123456789), time.Unix(0, 1), time.Unix(4102444800, 0)} {
		b, err := proto.Marshal(&pageapi.LeaseLsnResponse{Expires: timestamppb.New(exp)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeLeaseLsnResponse(b)
		if err != nil || !got.Equal(exp) {
			t.Errorf("expiry %v decoded to %v, %v", exp, got, err)
		}
	}
	if _, err := decodeLeaseLsnResponse(nil); err == nil {
		t.Error("a lease answer without expiry decoded")
	}
	for _, bad := range [][]byte{{0x0a, 0x05, 0x01}, {0x08}, {0x0b}, {0x80}} {
		if _, err := decodeChunk(bad); err == nil {
			t.Errorf("malformed message %x decoded", bad)
		}
	}
}
