package computeclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/computetools/compute-tools/internal/apiwire"
	"github.com/computetools/compute-tools/internal/lfc/lfcstate"
	"github.com/computetools/compute-tools/internal/spec"
	"github.com/computetools/compute-tools/internal/state"
	"github.com/computetools/compute-tools/internal/statusview"
)

// The wire types, under names code outside this module can write.
type (
	// StatusResponse is GET /status's body (Neon's ComputeStatusResponse).
	StatusResponse = statusview.Response
	// ComputeStatus is the compute's status (the constants below).
	ComputeStatus = state.Status
	// Metrics is GET /metrics.json's body (Neon's ComputeMetrics).
	Metrics = state.Metrics
	// ComputeConfig is POST /configure's body (spec and compute_ctl_config, both
	// required by the server).
	ComputeConfig = spec.ComputeConfig
	// ComputeSpec is the spec of a ComputeConfig.
	ComputeSpec = spec.ComputeSpec
	// ComputeCtlConfig is the compute_ctl_config of a ComputeConfig.
	ComputeCtlConfig = spec.ComputeCtlConfig
	// TerminateResponse is POST /terminate's body.
	TerminateResponse = apiwire.TerminateResponse
	// PrewarmState is GET /lfc/prewarm's body; its Status is one of the Prewarm*
	// constants.
	PrewarmState = lfcstate.PrewarmState
	// PrewarmStatus is the status of a PrewarmState.
	PrewarmStatus = lfcstate.PrewarmStatus
	// OffloadState is GET /lfc/offload's body; its Status is one of the Offload*
	// constants.
	OffloadState = lfcstate.OffloadState
	// OffloadStatus is the status of an OffloadState.
	OffloadStatus = lfcstate.OffloadStatus
)

// The compute's statuses.
const (
	StatusEmpty                       = state.Empty
	StatusConfigurationPending        = state.ConfigurationPending
	StatusInit                        = state.Init
	StatusRunning                     = state.Running
	StatusConfiguration               = state.Configuration
	StatusFailed                      = state.Failed
	StatusTerminationPendingFast      = state.TerminationPendingFast
	StatusTerminationPendingImmediate = state.TerminationPendingImmediate
	StatusTerminated                  = state.Terminated
	StatusRefreshConfigurationPending = state.RefreshConfigurationPending
	StatusRefreshConfiguration        = state.RefreshConfiguration
)

// The LFC prewarm and offload statuses.
const (
	PrewarmNotPrewarmed = lfcstate.PrewarmNotPrewarmed
	PrewarmPrewarming   = lfcstate.PrewarmPrewarming
	PrewarmCompleted    = lfcstate.PrewarmCompleted
	PrewarmFailed       = lfcstate.PrewarmFailed
	PrewarmSkipped      = lfcstate.PrewarmSkipped
	PrewarmCancelled    = lfcstate.PrewarmCancelled

	OffloadNotOffloaded = lfcstate.OffloadNotOffloaded
	OffloadOffloading   = lfcstate.OffloadOffloading
	OffloadCompleted    = lfcstate.OffloadCompleted
	OffloadFailed       = lfcstate.OffloadFailed
	OffloadSkipped      = lfcstate.OffloadSkipped
)

// Client calls the external port.
type Client struct{ c *conn }

// New returns a client of the external port at baseURL (e.g. http://compute:3080),
// authenticating with token (a compute_id token, or an admin token with aud
// ["compute"], which /terminate needs from Neon's control plane).
func New(baseURL string, token TokenSource, opts ...Option) (*Client, error) {
	c, err := newConn(baseURL, opts)
	if err != nil {
		return nil, err
	}
	c.token = token
	return &Client{c: c}, nil
}

// Status returns the compute's status (GET /status).
func (cl *Client) Status(ctx context.Context) (*StatusResponse, error) {
	var out StatusResponse
	_, err := cl.c.doJSON(ctx, request{method: "GET", path: "/status", auth: true, accept: []int{200}}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// MetricsJSON returns the startup timings (GET /metrics.json).
func (cl *Client) MetricsJSON(ctx context.Context) (*Metrics, error) {
	var out Metrics
	_, err := cl.c.doJSON(ctx, request{method: "GET", path: "/metrics.json", auth: true, accept: []int{200}}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// PrometheusMetrics returns GET /metrics in the text exposition format (no token
// sent). The caller closes it.
func (cl *Client) PrometheusMetrics(ctx context.Context) (io.ReadCloser, error) {
	resp, err := cl.c.do(ctx, request{method: "GET", path: "/metrics", accept: []int{200}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Configure sends a config (POST /configure) and returns the status once the compute
// runs; a compute that failed is an *Error with 500 and the reason.
func (cl *Client) Configure(ctx context.Context, cfg *ComputeConfig) (*StatusResponse, error) {
	b, err := jsonBody(cfg)
	if err != nil {
		return nil, err
	}
	return cl.ConfigureRaw(ctx, b)
}

// ConfigureRaw is Configure with the body as JSON bytes, sent unchanged.
func (cl *Client) ConfigureRaw(ctx context.Context, body []byte) (*StatusResponse, error) {
	var out StatusResponse
	_, err := cl.c.doJSON(ctx, request{method: "POST", path: "/configure", body: body,
		contentType: "application/json", auth: true, accept: []int{200}}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// TerminateMode is the shutdown mode of Terminate.
type TerminateMode string

// The modes. The zero value sends no query string (the server's default, fast).
const (
	TerminateDefault   TerminateMode = ""
	TerminateFast      TerminateMode = "fast"
	TerminateImmediate TerminateMode = "immediate"
)

// Terminate stops the compute (POST /terminate) and returns the final LSN once it is
// terminated; already is true when it was terminated before the call (201).
func (cl *Client) Terminate(ctx context.Context, mode TerminateMode) (resp *TerminateResponse, already bool, err error) {
	req := request{method: "POST", path: "/terminate", auth: true, accept: []int{200, 201}}
	if mode != TerminateDefault {
		req.query = url.Values{"mode": {string(mode)}}
	}
	var out TerminateResponse
	code, err := cl.c.doJSON(ctx, req, &out)
	if err != nil {
		return nil, false, err
	}
	return &out, code == http.StatusCreated, nil
}

// LFCPrewarmState returns the LFC prewarm state (GET /lfc/prewarm).
func (cl *Client) LFCPrewarmState(ctx context.Context) (*PrewarmState, error) {
	var out PrewarmState
	if _, err := cl.c.doJSON(ctx, request{method: "GET", path: "/lfc/prewarm", auth: true, accept: []int{200}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LFCPrewarm starts a prewarm (POST /lfc/prewarm), from another endpoint's state when
// fromEndpoint is not empty. It returns once the prewarm was taken; LFCPrewarmState
// tells its outcome. A running prewarm is an *Error with 429.
func (cl *Client) LFCPrewarm(ctx context.Context, fromEndpoint string) error {
	req := request{method: "POST", path: "/lfc/prewarm", auth: true, accept: []int{202}}
	if fromEndpoint != "" {
		req.query = url.Values{"from_endpoint": {fromEndpoint}}
	}
	_, err := cl.c.doEmpty(ctx, req)
	return err
}

// LFCCancelPrewarm cancels a running prewarm (DELETE /lfc/prewarm); with none running
// nothing happens.
func (cl *Client) LFCCancelPrewarm(ctx context.Context) error {
	_, err := cl.c.doEmpty(ctx, request{method: "DELETE", path: "/lfc/prewarm", auth: true, accept: []int{202}})
	return err
}

// LFCOffloadState returns the LFC offload state (GET /lfc/offload).
func (cl *Client) LFCOffloadState(ctx context.Context) (*OffloadState, error) {
	var out OffloadState
	if _, err := cl.c.doJSON(ctx, request{method: "GET", path: "/lfc/offload", auth: true, accept: []int{200}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LFCOffload starts an offload (POST /lfc/offload); LFCOffloadState tells its outcome.
func (cl *Client) LFCOffload(ctx context.Context) error {
	_, err := cl.c.doEmpty(ctx, request{method: "POST", path: "/lfc/offload", auth: true, accept: []int{202}})
	return err
}

// Internal calls the internal port (no authentication).
type Internal struct{ c *conn }

// NewInternal returns a client of the internal port at baseURL (e.g.
// http://127.0.0.1:3081).
func NewInternal(baseURL string, opts ...Option) (*Internal, error) {
	c, err := newConn(baseURL, opts)
	if err != nil {
		return nil, err
	}
	return &Internal{c: c}, nil
}

// DownloadExtension asks for a remote extension's files (POST
// /extension_server/{filename}), as Postgres' neon extension does: filename is an
// extension name, or a library file name with isLibrary.
func (in *Internal) DownloadExtension(ctx context.Context, filename string, isLibrary bool) error {
	if filename == "" {
		return fmt.Errorf("download extension: empty file name")
	}
	req := request{method: "POST", path: "/extension_server/" + escapePath(filename), accept: []int{200}}
	if isLibrary {
		req.query = url.Values{"is_library": {"true"}}
	}
	_, err := in.c.doEmpty(ctx, req)
	return err
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	u := url.URL{Path: p}
	return u.EscapedPath()
}
