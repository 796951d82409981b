// Package apiwire holds the bodies of compute API routes that are not the wire form of
// another package's type (the status view is internal/statusview's, the LFC states
// internal/lfc/lfcstate's, the config internal/spec's, the error shape
// internal/httpjson's). It imports the standard library only, so that the server
// (internal/api) and the Go client (pkg/computeclient) share one definition.
package apiwire

// TerminateResponse is the body of POST /terminate (Neon's TerminateResponse): the last
// WAL flush LSN after the final safekeeper sync, or null.
type TerminateResponse struct {
	LSN *string `json:"lsn"`
}
