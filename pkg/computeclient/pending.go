package computeclient

// The one route of compute_ctl that compute-tools does not serve (api/openapi.yaml: it
// answers 404): POST /failpoints, on the internal port of compute_ctl's testing builds.
// Its method follows compute_ctl's code; its type is provisional (there is no server
// wire type to alias) and it is tested only against a recording server
// (pending_test.go).

import "context"

// FailpointConfig is one entry of POST /failpoints's body (testing builds only): the
// failpoint's name and its actions in the `fail` crate's syntax. Provisional.
type FailpointConfig struct {
	Name    string `json:"name"`
	Actions string `json:"actions"`
}

// ConfigureFailpoints sets failpoints (POST /failpoints, internal port, testing builds
// only; other builds answer 404).
func (in *Internal) ConfigureFailpoints(ctx context.Context, fps []FailpointConfig) error {
	b, err := jsonBody(fps)
	if err != nil {
		return err
	}
	_, err = in.c.doEmpty(ctx, request{method: "POST", path: "/failpoints", body: b,
		contentType: "application/json", accept: []int{200}})
	return err
}
