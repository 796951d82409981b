package promotestate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"strings"

	"github.com/computetools/compute-tools/internal/spec"
)

// DecodeErrorKind says what is wrong with a body; compute-api maps it to the status code
// of axum's extractors (415, 400, 422).
type DecodeErrorKind int

// The kinds of DecodeError.
const (
	// BadContentType: neither JSON nor a form (axum: 415).
	BadContentType DecodeErrorKind = iota + 1
	// BadSyntax: the JSON body does not parse (axum: 400).
	BadSyntax
	// BadData: the body parses but is not a SafekeepersLsn: a missing, duplicate or
	// mistyped field, an LSN that does not parse (axum: 422).
	BadData
)

// DecodeError is a body Decode refuses. Msg is the text for the error answer, in the
// words of axum's extractors (lower-cased, as compute_ctl's errors are).
type DecodeError struct {
	Kind DecodeErrorKind
	Msg  string
}

func (e *DecodeError) Error() string { return e.Msg }

// The media types Decode takes.
const (
	ContentTypeJSON = "application/json"
	ContentTypeForm = "application/x-www-form-urlencoded"
)

// The message prefixes of axum's JSON and Form extractors.
const (
	msgContentType = "expected request with `content-type: application/json` or `content-type: application/x-www-form-urlencoded`"
	prefixSyntax   = "failed to parse the request body as json: "
	prefixJSONData = "failed to deserialize the json body into the target type: "
	prefixFormData = "failed to deserialize form body: "
)

// Decode reads a POST /promote body by its Content-Type: JSON (application/json or
// application/*+json), as Neon's OpenAPI documents the request, or a form
// (application/x-www-form-urlencoded), which is what compute_ctl's handler reads (axum's
// Form extractor). Both need the two fields, each once, as strings; other fields are
// ignored (as serde does without deny_unknown_fields).
func Decode(contentType string, body []byte) (Request, error) {
	form, err := CheckContentType(contentType)
	if err != nil {
		return Request{}, err
	}
	if form {
		return decodeForm(body)
	}
	return decodeJSON(body)
}

// CheckContentType says whether a Content-Type is one Decode takes (before the body is
// read, as axum's extractors check it first), and whether it is the form.
func CheckContentType(contentType string) (form bool, err error) {
	mt, _, perr := mime.ParseMediaType(contentType)
	switch {
	case perr != nil:
	case mt == ContentTypeForm:
		return true, nil
	case mt == ContentTypeJSON || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")):
		return false, nil
	}
	return false, &DecodeError{Kind: BadContentType, Msg: msgContentType}
}

var fields = []string{"safekeepers", "wal_flush_lsn"}

func decodeJSON(body []byte) (Request, error) {
	if !json.Valid(body) {
		var v any
		msg := "invalid json"
		if err := json.Unmarshal(body, &v); err != nil {
			msg = err.Error()
		}
		return Request{}, &DecodeError{Kind: BadSyntax, Msg: strings.ToLower(prefixSyntax + msg)}
	}
	bad := func(format string, args ...any) (Request, error) {
		return Request{}, &DecodeError{Kind: BadData, Msg: prefixJSONData + fmt.Sprintf(format, args...)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return bad("invalid type: %s, expected struct SafekeepersLsn", jsonKind(body))
	}
	var req Request
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad("%v", err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return bad("%v", err)
		}
		switch key {
		case "safekeepers":
			if seen[key] {
				return bad("duplicate field `%s`", key)
			}
			if raw[0] != '"' {
				return bad("invalid type: %s, expected a string for field `%s`", jsonKind(raw), key)
			}
			if err := json.Unmarshal(raw, &req.Safekeepers); err != nil {
				return bad("%v", err)
			}
		case "wal_flush_lsn":
			if seen[key] {
				return bad("duplicate field `%s`", key)
			}
			if raw[0] != '"' {
				return bad("invalid type: %s, expected an LSN string \"HI/LO\" for field `%s`", jsonKind(raw), key)
			}
			if err := json.Unmarshal(raw, &req.WALFlushLSN); err != nil {
				return bad("%v for field `%s`", err, key)
			}
		}
		seen[key] = true
	}
	for _, f := range fields {
		if !seen[f] {
			return bad("missing field `%s`", f)
		}
	}
	return req, nil
}

// jsonKind names the kind of a JSON value as serde's errors do.
func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "map"
	case '[':
		return "sequence"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func decodeForm(body []byte) (Request, error) {
	bad := func(format string, args ...any) (Request, error) {
		return Request{}, &DecodeError{Kind: BadData, Msg: prefixFormData + fmt.Sprintf(format, args...)}
	}
	q, err := url.ParseQuery(string(body))
	if err != nil {
		return bad("%s", strings.ToLower(err.Error()))
	}
	var req Request
	for _, f := range fields {
		switch v := q[f]; len(v) {
		case 0:
			return bad("missing field `%s`", f)
		case 1:
		default:
			return bad("duplicate field `%s`", f)
		}
	}
	req.Safekeepers = q.Get("safekeepers")
	lsn, err := spec.ParseLsn(q.Get("wal_flush_lsn"))
	if err != nil {
		return bad("%v for field `wal_flush_lsn`", err)
	}
	req.WALFlushLSN = lsn
	return req, nil
}

// Form encodes r as the form body compute_ctl reads.
func (r Request) Form() string {
	return url.Values{"safekeepers": {r.Safekeepers}, "wal_flush_lsn": {r.WALFlushLSN.String()}}.Encode()
}
