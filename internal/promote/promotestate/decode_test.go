package promotestate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

func TestDecodeAccepts(t *testing.T) {
	want := Request{Safekeepers: "sk-0:5454,sk-1:5454", WALFlushLSN: 0x1_016B5A50}
	for _, tc := range []struct{ name, ct, body string }{
		{"json", "application/json", `{"safekeepers":"sk-0:5454,sk-1:5454","wal_flush_lsn":"1/16B5A50"}`},
		{"json charset", "application/json; charset=utf-8", `{"wal_flush_lsn":"1/16b5a50","safekeepers":"sk-0:5454,sk-1:5454"}`},
		{"json+suffix, unknown fields ignored", "application/vnd.neon+json", `{"safekeepers":"sk-0:5454,sk-1:5454","wal_flush_lsn":" 1/16B5A50 ","extra":[1,{"a":null}]}`},
		{"form", "application/x-www-form-urlencoded", "safekeepers=sk-0%3A5454%2Csk-1%3A5454&wal_flush_lsn=1%2F16B5A50"},
		{"form raw", "application/x-www-form-urlencoded; charset=UTF-8", "wal_flush_lsn=1/16B5A50&safekeepers=sk-0:5454,sk-1:5454&other=x"},
		{"form as Form() writes it", "application/x-www-form-urlencoded", want.Form()},
	} {
		got, err := Decode(tc.ct, []byte(tc.body))
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v", tc.name, got, err)
		}
	}
	// '+' is a space in a form; an empty safekeepers list is a value.
	got, err := Decode(ContentTypeForm, []byte("safekeepers=&wal_flush_lsn=0/0"))
	if err != nil || got != (Request{}) {
		t.Errorf("empty safekeepers: %+v, %v", got, err)
	}
	got, err = Decode(ContentTypeForm, []byte("safekeepers=a+b&wal_flush_lsn=0/1"))
	if err != nil || got.Safekeepers != "a b" {
		t.Errorf("plus: %+v, %v", got, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		kind           DecodeErrorKind
		msg            string
	}{
		{"no content type", "", `{}`, BadContentType, msgContentType},
		{"text/plain", "text/plain", "safekeepers=a&wal_flush_lsn=0/1", BadContentType, msgContentType},
		{"multipart", "multipart/form-data; boundary=x", "", BadContentType, msgContentType},
		{"bad media type", "application/json; =", `{}`, BadContentType, msgContentType},
		{"not json", "application/json", `safekeepers=a`, BadSyntax, "failed to parse the request body as json: invalid character 's' looking for beginning of value"},
		{"truncated json", "application/json", `{"safekeepers":"a"`, BadSyntax, "failed to parse the request body as json: unexpected end of json input"},
		{"trailing json", "application/json", `{} {}`, BadSyntax, "failed to parse the request body as json: invalid character '{' after top-level value"},
		{"empty json", "application/json", ``, BadSyntax, "failed to parse the request body as json: unexpected end of json input"},
		{"array", "application/json", `[]`, BadData, "failed to deserialize the json body into the target type: invalid type: sequence, expected struct SafekeepersLsn"},
		{"null", "application/json", `null`, BadData, "failed to deserialize the json body into the target type: invalid type: null, expected struct SafekeepersLsn"},
		{"missing safekeepers", "application/json", `{"wal_flush_lsn":"0/1"}`, BadData, "failed to deserialize the json body into the target type: missing field `safekeepers`"},
		{"missing lsn", "application/json", `{"safekeepers":"a"}`, BadData, "failed to deserialize the json body into the target type: missing field `wal_flush_lsn`"},
		{"safekeepers a list", "application/json", `{"safekeepers":["a"],"wal_flush_lsn":"0/1"}`, BadData, "failed to deserialize the json body into the target type: invalid type: sequence, expected a string for field `safekeepers`"},
		{"safekeepers null", "application/json", `{"safekeepers":null,"wal_flush_lsn":"0/1"}`, BadData, "failed to deserialize the json body into the target type: invalid type: null, expected a string for field `safekeepers`"},
		{"lsn a number", "application/json", `{"safekeepers":"a","wal_flush_lsn":23845456}`, BadData, "failed to deserialize the json body into the target type: invalid type: number, expected an LSN string \"HI/LO\" for field `wal_flush_lsn`"},
		{"lsn not hex", "application/json", `{"safekeepers":"a","wal_flush_lsn":"0/XYZ"}`, BadData, "failed to deserialize the json body into the target type: invalid LSN \"0/XYZ\": want HI/LO in hex for field `wal_flush_lsn`"},
		{"duplicate", "application/json", `{"safekeepers":"a","safekeepers":"b","wal_flush_lsn":"0/1"}`, BadData, "failed to deserialize the json body into the target type: duplicate field `safekeepers`"},
		{"form missing", ContentTypeForm, "safekeepers=a", BadData, "failed to deserialize form body: missing field `wal_flush_lsn`"},
		{"form empty", ContentTypeForm, "", BadData, "failed to deserialize form body: missing field `safekeepers`"},
		{"form duplicate", ContentTypeForm, "safekeepers=a&safekeepers=b&wal_flush_lsn=0/1", BadData, "failed to deserialize form body: duplicate field `safekeepers`"},
		{"form bad lsn", ContentTypeForm, "safekeepers=a&wal_flush_lsn=16B5A50", BadData, "failed to deserialize form body: invalid LSN \"16B5A50\": want HI/LO in hex for field `wal_flush_lsn`"},
		{"form bad escape", ContentTypeForm, "safekeepers=%zz&wal_flush_lsn=0/1", BadData, "failed to deserialize form body: invalid url escape \"%zz\""},
		{"form json body", ContentTypeForm, `{"safekeepers":"a","wal_flush_lsn":"0/1"}`, BadData, "failed to deserialize form body: missing field `safekeepers`"},
	} {
		_, err := Decode(tc.ct, []byte(tc.body))
		var de *DecodeError
		if !errors.As(err, &de) || de.Kind != tc.kind || de.Msg != tc.msg {
			t.Errorf("%s: %v (kind %v), want kind %v %q", tc.name, err, kindOf(de), tc.kind, tc.msg)
		}
	}
}

func kindOf(e *DecodeError) DecodeErrorKind {
	if e == nil {
		return 0
	}
	return e.Kind
}

func TestStateJSON(t *testing.T) {
	for _, tc := range []struct {
		p    *Promotion
		want string
	}{
		{nil, `{"status":"not_promoted"}`},
		{&Promotion{Phase: PhasePromoting}, `{"status":"not_promoted"}`},
		{&Promotion{Phase: PhaseCompleted}, `{"status":"completed"}`},
		{&Promotion{Phase: PhaseFailed, Error: "didn't catch up"}, `{"status":"failed","error":"didn't catch up"}`},
	} {
		b, err := json.Marshal(tc.p.State())
		if err != nil || string(b) != tc.want {
			t.Errorf("%+v: %s, want %s", tc.p, b, tc.want)
		}
	}
	for _, s := range Statuses {
		if !strings.Contains(`[not_promoted, completed, failed]`, string(s)) {
			t.Errorf("status %s is not in Neon's enum", s)
		}
	}
	// The request's JSON is Neon's SafekeepersLsn.
	b, _ := json.Marshal(Request{Safekeepers: "a:1", WALFlushLSN: spec.Lsn(0x16B5A50)})
	if string(b) != `{"safekeepers":"a:1","wal_flush_lsn":"0/16B5A50"}` {
		t.Errorf("request JSON %s", b)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(ContentTypeJSON, []byte(`{"safekeepers":"a:1","wal_flush_lsn":"0/1"}`))
	f.Add(ContentTypeForm, []byte("safekeepers=a%3A1&wal_flush_lsn=0%2F1"))
	f.Add("application/problem+json", []byte(`{"safekeepers":1}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		req, err := Decode(ct, body)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Kind < BadContentType || de.Kind > BadData || de.Msg == "" {
				t.Fatalf("error %#v", err)
			}
			return
		}
		// What decodes re-encodes as a form that decodes to the same request.
		again, err := Decode(ContentTypeForm, []byte(req.Form()))
		if err != nil || again != req {
			t.Fatalf("form round trip of %+v: %+v, %v", req, again, err)
		}
	})
}
