// Package controlplane talks to Neon's control plane on behalf of a compute: it fetches the
// compute's configuration (GET /compute/api/v2/computes/{id}/spec) with Neon's retry rules,
// loads the control-plane token (a systemd credential; the old environment variable with a
// warning), and normalises the base URL of the remote-extension gateway given on the
// command line (https://, or http:// when the operator allows it).
//
// Differences from the reference, on purpose: redirects are not followed (the bearer token
// would go wherever they point; reqwest follows up to 10), URLs are logged without
// credentials, and a plain-HTTP extension gateway needs the operator's opt-in.
package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/computetools/compute-tools/internal/redact"
	"github.com/computetools/compute-tools/internal/retry"
	"github.com/computetools/compute-tools/internal/spec"
)

const (
	// Attempts is how many times FetchConfig asks before giving up on retryable errors.
	Attempts = 3
	// RetryDelay separates two attempts.
	RetryDelay = 100 * time.Millisecond
	// DefaultRequestTimeout bounds one request, connect to the end of the body: that of
	// compute_ctl's client (reqwest's blocking client, 30 s). With Attempts and
	// RetryDelay a control plane that never answers fails a start after about 90 s.
	DefaultRequestTimeout = 30 * time.Second
	// RPCGetConfig is the rpc label of compute_ctl_cplane_requests_total for FetchConfig.
	RPCGetConfig = "GetConfig"
	// UnknownHTTPStatus is the http_status label of a request that got no response.
	UnknownHTTPStatus = "unknown"

	// Control-plane compute statuses.
	StatusEmpty    = "empty"
	StatusAttached = "attached"

	maxBody    = 64 << 20 // a spec is far smaller; this only bounds memory
	maxExcerpt = 200
)

// NewClient is the HTTP client for the control plane: one request, body included, at
// most timeout (0: DefaultRequestTimeout), and no redirects. A redirect is answered as the response it is (an
// unexpected status): following it would send the bearer token to wherever the
// redirect points (Go's client keeps the header for the same host, an https-to-http
// downgrade included). The reference (reqwest) follows up to 10.
func NewClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	return &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// RedactURL renders a URL for a log line without its credentials: the password of the
// user information and the query's values are replaced.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Option changes FetchConfig.
type Option func(*options)

type options struct {
	onRequest  func(httpStatus string)
	retryDelay time.Duration
	log        *slog.Logger
}

// WithLogger sets the logger of FetchConfig (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithOnRequest calls f after every attempt with the http_status label of
// compute_ctl_cplane_requests_total{rpc="GetConfig"}: the status as Neon prints it
// ("200 OK", "503 Service Unavailable") or "unknown" when no response came.
func WithOnRequest(f func(httpStatus string)) Option {
	return func(o *options) { o.onRequest = f }
}

// FetchConfig gets the compute's configuration from the control plane at baseURI, sending
// token (NEON_CONTROL_PLANE_TOKEN; may be empty) as a bearer token. It tries up to
// Attempts times, RetryDelay apart, when the request fails in transport, the answer is 502
// or 503, or the body does not decode into a valid configuration; any other status fails
// at once, as does an "attached" answer without a spec. An "empty" answer gives a config
// without a spec. Each request, body included, is bounded by the client's Timeout (a nil
// client is one with DefaultRequestTimeout), so a control plane that stalls is an attempt
// that failed in transport; ctx bounds the whole call.
func FetchConfig(ctx context.Context, client *http.Client, baseURI, computeID, token string, opts ...Option) (*spec.ComputeConfig, error) {
	o := options{retryDelay: RetryDelay}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if client == nil {
		client = NewClient(0)
	}
	if computeID == "" {
		return nil, errors.New("fetch config: empty compute id")
	}
	u := strings.TrimRight(baseURI, "/") + "/compute/api/v2/computes/" + url.PathEscape(computeID) + "/spec"
	o.log.Info("getting config from control plane", "url", RedactURL(u))

	var cfg *spec.ComputeConfig
	err := retry.Do(ctx, retry.Policy{Attempts: Attempts, Delay: o.retryDelay}, func(ctx context.Context, attempt int) error {
		c, status, again, err := fetchOnce(ctx, client, u, token, o.log)
		if o.onRequest != nil {
			o.onRequest(status)
		}
		switch {
		case err == nil:
			cfg = c
			return nil
		case ctx.Err() != nil:
			return err // Do reports the context's end
		case !again:
			return retry.Permanent(err)
		}
		o.log.Warn("control plane config request failed", "attempt", attempt, "http_status", status, "err", err)
		return err
	})
	var re *retry.Error
	switch {
	case err == nil:
		return cfg, nil
	case errors.As(err, &re) && re.Ctx != nil:
		return nil, fmt.Errorf("fetch config: %w", re.Ctx)
	}
	return nil, fmt.Errorf("fetch config: %w", err)
}

// fetchOnce makes one request. It returns the metric label of the answer and whether a
// failure is worth retrying.
func fetchOnce(ctx context.Context, client *http.Client, u, token string, log *slog.Logger) (cfg *spec.ComputeConfig, status string, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, UnknownHTTPStatus, false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, UnknownHTTPStatus, true, fmt.Errorf("request control plane: %w", redact.Error(err, token))
	}
	defer resp.Body.Close()
	status = statusLabel(resp.StatusCode)
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBody))

	switch resp.StatusCode {
	case http.StatusOK:
		if readErr != nil {
			return nil, status, true, fmt.Errorf("read control plane response: %w", readErr)
		}
		cfg, permanent, err := decode(body, log)
		if err != nil {
			return nil, status, !permanent, err
		}
		return cfg, status, false, nil
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return nil, status, true, fmt.Errorf("control plane unavailable: %s", status)
	default:
		return nil, status, false, fmt.Errorf("unexpected control plane response status %s: %s", status, excerpt(body, token))
	}
}

// decode turns a 200 answer into a ComputeConfig. A body that does not decode (bad JSON,
// unknown status, invalid spec or compute_ctl_config) is retryable, as a decode error is
// in Neon; "attached" without a spec is permanent.
func decode(body []byte, log *slog.Logger) (cfg *spec.ComputeConfig, permanent bool, err error) {
	var head struct {
		Status *string         `json:"status"`
		Spec   json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, false, fmt.Errorf("decode control plane response: %w", err)
	}
	if head.Status == nil {
		return nil, false, errors.New(`decode control plane response: missing field "status"`)
	}
	if *head.Status != StatusEmpty && *head.Status != StatusAttached {
		return nil, false, fmt.Errorf("decode control plane response: unknown status %q", truncate(*head.Status))
	}
	cfg, err = spec.ParseConfig(body)
	if err != nil {
		return nil, false, fmt.Errorf("decode control plane response: %w", err)
	}
	switch *head.Status {
	case StatusAttached:
		if cfg.Spec == nil {
			return nil, true, errors.New("compute is attached, but spec is empty")
		}
	case StatusEmpty:
		if cfg.Spec != nil {
			log.Warn("control plane says the compute is empty but sent a spec; ignoring the spec")
			cfg.Spec = nil
		}
	}
	return cfg, false, nil
}

// statusLabel spells a status code as Neon's metric label does ("404 Not Found").
func statusLabel(code int) string {
	text := http.StatusText(code)
	if text == "" {
		text = "<unknown status code>"
	}
	return fmt.Sprintf("%d %s", code, text)
}

// excerpt quotes the start of a response body for an error message, without the token.
func excerpt(body []byte, token string) string {
	s := redact.String(strings.TrimSpace(strings.ToValidUTF8(string(body), "?")), token)
	if s == "" {
		return "(empty body)"
	}
	return fmt.Sprintf("%q", truncate(s))
}

func truncate(s string) string {
	if len(s) <= maxExcerpt {
		return s
	}
	cut := maxExcerpt
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// ErrPlainHTTP refuses an http:// extension gateway that the operator has not allowed.
var ErrPlainHTTP = errors.New("plain http:// gives the archives no integrity (whoever is on the path can hand Postgres its own code): use https://, or allow plain HTTP with --remote-ext-allow-http (REMOTE_EXT_ALLOW_HTTP=true) for a gateway on a network you trust")

// NormalizeRemoteExtURL checks the --remote-ext-base-url flag: an absolute https:// URL
// (http:// only with allowHTTP: the archives carry no checksum, so only TLS protects
// what Postgres will load) whose trailing slashes become exactly one (so that joining a
// relative path keeps the base path), and which carries no query parameters. The
// reference takes any URL, Neon's in-cluster gateway being plain http://.
func NormalizeRemoteExtURL(s string, allowHTTP bool) (string, error) {
	raw := strings.TrimRight(s, "/") + "/"
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("remote extensions base URL: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("remote extensions base URL %q: want an absolute URL like https://host[:port]", RedactURL(s))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTP:
	case u.Scheme == "http":
		return "", fmt.Errorf("remote extensions base URL %q: %w", RedactURL(s), ErrPlainHTTP)
	default:
		return "", fmt.Errorf("remote extensions base URL %q: scheme %q, want https (or http)", RedactURL(s), u.Scheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil || len(q) != 0 {
		return "", fmt.Errorf("remote extensions base URL %q: parameters detected", RedactURL(s))
	}
	return u.String(), nil
}
