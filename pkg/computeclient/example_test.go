package computeclient_test

import (
	"context"
	"fmt"
	"time"

	"github.com/computetools/compute-tools/pkg/computeclient"
)

// A control plane reads a compute's status and terminates it with an admin token.
func Example() {
	c, err := computeclient.New("http://compute-1:3080", computeclient.StaticToken("<admin JWT>"))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Println("status:", err)
		return
	}
	if st.Status != computeclient.StatusRunning {
		return
	}
	resp, already, err := c.Terminate(ctx, computeclient.TerminateFast)
	switch {
	case computeclient.StatusCode(err) == 412:
		fmt.Println("the compute is busy:", err)
	case err != nil:
		fmt.Println("terminate:", err)
	case already:
		fmt.Println("already terminated at", resp.LSN)
	default:
		fmt.Println("terminated at", resp.LSN)
	}
}
