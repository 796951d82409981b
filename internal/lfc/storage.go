package lfc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/computetools/compute-tools/internal/redact"
)

// Key is the object name of the LFC state in endpoint storage (Neon's KEY).
const Key = "lfc_state"

// Defaults of ClientOptions.
const (
	DefaultTimeout  = 60 * time.Second
	DefaultMaxBytes = 256 << 20
)

// ErrNotFound is a 404 from endpoint storage: there is no state (yet). A prewarm then
// ends skipped, not failed.
var ErrNotFound = errors.New("LFC state not found in endpoint storage")

// Endpoint says where this compute's LFC state lives: the spec's endpoint_storage_addr,
// endpoint_storage_token, tenant, timeline and endpoint_id.
type Endpoint struct {
	Addr       string
	Token      string
	TenantID   string
	TimelineID string
	EndpointID string
}

// ClientOptions configures NewClient.
type ClientOptions struct {
	// Timeout bounds each request, body included; DefaultTimeout if zero.
	Timeout time.Duration
	// MaxBytes bounds a downloaded body; DefaultMaxBytes if zero.
	MaxBytes int64
	// Transport, if set, replaces http.DefaultTransport (tests).
	Transport http.RoundTripper
	// Logger: slog.Default() if nil.
	Logger *slog.Logger
}

// Client talks to endpoint storage: GET and PUT of
// http://{addr}/{tenant_id}/{timeline_id}/{endpoint_id}/lfc_state with the token as
// bearer token. Bodies are passed through as they are (zstd frames; Core compresses and
// decompresses). The token never appears in its errors or logs.
type Client struct {
	ep       Endpoint
	http     *http.Client
	maxBytes int64
	log      *slog.Logger
}

// NewClient returns a client for ep. A missing field is reported by each call (as Neon,
// whose prewarm or offload then fails with that reason).
func NewClient(ep Endpoint, o ClientOptions) *Client {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	hc := &http.Client{Timeout: o.Timeout, Transport: o.Transport}
	// A redirect could carry the bearer token elsewhere; endpoint storage does not
	// redirect.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{ep: ep, http: hc, maxBytes: o.MaxBytes, log: o.Logger}
}

// URL returns the state's URL for endpointID, or this compute's endpoint when empty. An
// endpoint id other than letters, digits, '-' and '_' is refused ("invalid endpoint id").
func (c *Client) URL(endpointID string) (string, error) {
	if endpointID == "" {
		endpointID = c.ep.EndpointID
	}
	switch {
	case endpointID == "":
		return "", errors.New("endpoint_id missing, other endpoint_id not provided")
	case c.ep.Addr == "":
		return "", errors.New("endpoint_storage_addr missing")
	case c.ep.Token == "":
		return "", errors.New("endpoint_storage_token missing")
	case c.ep.TenantID == "":
		return "", errors.New("tenant_id missing")
	case c.ep.TimelineID == "":
		return "", errors.New("timeline_id missing")
	case !ValidEndpointID(endpointID):
		return "", fmt.Errorf("invalid endpoint id %q: only letters, digits, '-' and '_' are allowed",
			redact.String(endpointID, c.ep.Token))
	}
	u := &url.URL{
		Scheme: "http",
		Host:   c.ep.Addr,
		Path:   "/" + c.ep.TenantID + "/" + c.ep.TimelineID + "/" + endpointID + "/" + Key,
		RawPath: "/" + url.PathEscape(c.ep.TenantID) + "/" + url.PathEscape(c.ep.TimelineID) + "/" +
			url.PathEscape(endpointID) + "/" + Key,
	}
	return u.String(), nil
}

// ValidEndpointID reports whether id is an endpoint id: a non-empty run of ASCII letters, digits, '-' and
// '_' (Neon's are "ep-<words>-<digits>"), so that from_endpoint can never name another
// path ("..", "a/b") in endpoint storage.
func ValidEndpointID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return false
		}
	}
	return true
}

// Get downloads the (compressed) state of endpointID, or of this compute's endpoint when
// empty (Neon's from_endpoint). A 404 is ErrNotFound; any other status than 200 is an
// error "<status> querying endpoint storage", as Neon's.
func (c *Client) Get(ctx context.Context, endpointID string) ([]byte, error) {
	u, err := c.URL(endpointID)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("querying endpoint storage: %w", redact.Error(err, c.ep.Token))
	}
	req.Header.Set("Authorization", "Bearer "+c.ep.Token)
	c.log.Info("requesting LFC state from endpoint storage", "url", redact.String(u, c.ep.Token))
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("querying endpoint storage: %w", c.clean(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, ErrNotFound
	default:
		return nil, fmt.Errorf("%s querying endpoint storage", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("getting request body from endpoint storage: %w", c.clean(err))
	}
	if int64(len(body)) > c.maxBytes {
		return nil, fmt.Errorf("getting request body from endpoint storage: larger than %d bytes", c.maxBytes)
	}
	return body, nil
}

// Put uploads the (compressed) state of this compute's endpoint. Only a 200 is success,
// as Neon's; anything else is "request to endpoint storage failed: <status>".
func (c *Client) Put(ctx context.Context, body []byte) error {
	u, err := c.URL("")
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("writing to endpoint storage: %w", redact.Error(err, c.ep.Token))
	}
	req.Header.Set("Authorization", "Bearer "+c.ep.Token)
	c.log.Info("writing LFC state to endpoint storage", "url", redact.String(u, c.ep.Token), "bytes", len(body))
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("writing to endpoint storage: %w", c.clean(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("request to endpoint storage failed: %s", resp.Status)
	}
	return nil
}

// clean drops the token from an error's text (it would only be there if an address or
// endpoint id quoted it) and keeps a context error recognisable.
func (c *Client) clean(err error) error {
	red := redact.Error(err, c.ep.Token)
	if red != err {
		switch {
		case errors.Is(err, context.Canceled):
			return fmt.Errorf("%w (%s)", context.Canceled, red.Error())
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%w (%s)", context.DeadlineExceeded, red.Error())
		}
	}
	return red
}
