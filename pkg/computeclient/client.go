// Package computeclient is a Go client of a compute's HTTP API (Neon compute_ctl's API
// as compute-tools serves it, api/openapi.yaml), for callers such as a control plane.
//
// Client talks to the external port (JWT bearer token on every route but /metrics);
// Internal to the internal port (no authentication). Every method takes a context,
// which bounds the call: POST /configure and POST /terminate block on the server until
// the compute is running or terminated, so give them a deadline of your own. Requests
// and responses are the server's own wire types (internal/statusview, internal/state,
// internal/lfc/lfcstate, internal/spec, internal/apiwire, internal/pgops/pgopswire,
// internal/promote/promotestate), re-exported here as type aliases so that code
// outside this module can name them. An answer other than the route's success is an
// *Error carrying the status code and the `{"error": ...}` message (POST /promote's
// failure also returns the failed PromoteState).
//
// POST /failpoints (compute_ctl's testing builds) is the one route of the reference
// that compute-tools does not serve (api/openapi.yaml): its method has a provisional
// type (pending.go) and answers *Error with 404.
package computeclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Error is an answer other than a route's success.
type Error struct {
	// StatusCode is the HTTP status (e.g. 412 for a call the compute's status forbids).
	StatusCode int
	// Message is the `error` of a `{"error": ...}` body; for another body (the router's
	// empty 404/405, a proxy's page) its text, trimmed.
	Message string
	// RequestID is the answer's X-Request-Id.
	RequestID string
	// body is the answer's body (up to maxErrorBody), for a route whose error answer
	// carries more than the message (POST /promote's PromoteState).
	body []byte
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("compute api: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("compute api: %d: %s", e.StatusCode, e.Message)
}

// StatusCode returns the HTTP status of an *Error in err's chain, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// TokenSource returns the bearer token for a request (called for each request, so a
// caller can mint short-lived tokens).
type TokenSource func(ctx context.Context) (string, error)

// StaticToken is a TokenSource that always returns tok.
func StaticToken(tok string) TokenSource {
	return func(context.Context) (string, error) { return tok, nil }
}

// Option configures a client.
type Option func(*conn)

// WithHTTPClient sets the HTTP client (default http.DefaultClient, which has no time
// limit: the contexts bound the calls).
func WithHTTPClient(c *http.Client) Option { return func(cn *conn) { cn.http = c } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(cn *conn) { cn.userAgent = ua } }

// conn is what both clients share: the base URL, the HTTP client and the token.
type conn struct {
	base      *url.URL
	http      *http.Client
	token     TokenSource
	userAgent string
}

func newConn(baseURL string, opts []Option) (*conn, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("parse base url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("base url %q: want http(s)://host:port", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &conn{base: u, http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// request is one call.
type request struct {
	method string
	path   string // escaped path below the base URL
	query  url.Values
	// body and contentType: a request body.
	body        []byte
	contentType string
	// auth: send the bearer token.
	auth bool
	// accept lists the success statuses.
	accept []int
}

// do sends req and returns the response of an accepted status (body open, to be closed
// by the caller) or an *Error.
func (c *conn) do(ctx context.Context, req request) (*http.Response, error) {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + req.path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", req.path, err)
	}
	u.Path = p
	if len(req.query) > 0 {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	if c.userAgent != "" {
		hr.Header.Set("User-Agent", c.userAgent)
	}
	if req.auth {
		if c.token == nil {
			return nil, errors.New("no token: the external port's routes need one (New's token source)")
		}
		tok, err := c.token(ctx)
		if err != nil {
			return nil, fmt.Errorf("get token: %w", err)
		}
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	for _, s := range req.accept {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// readError turns a response into an *Error.
func readError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e.body = b
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		var body struct {
			Error *string `json:"error"`
		}
		if json.Unmarshal(b, &body) == nil && body.Error != nil {
			e.Message = *body.Error
			return e
		}
	}
	e.Message = strings.TrimSpace(string(b))
	return e
}

// doJSON sends req and decodes an accepted answer's JSON body into out; it returns the
// status.
func (c *conn) doJSON(ctx context.Context, req request, out any) (int, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", req.method, req.path, err)
	}
	return resp.StatusCode, nil
}

// doEmpty sends req and discards an accepted answer's body.
func (c *conn) doEmpty(ctx context.Context, req request) (int, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return resp.StatusCode, nil
}

// decodeStrict decodes one JSON value of b into out, refusing unknown fields.
func decodeStrict(b []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}
