package api

// terminateResponse is Neon's TerminateResponse.
type terminateResponse struct {
	LSN *string `json:"lsn"`
}
