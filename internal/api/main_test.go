package api

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/openapitest"
	"github.com/computetools/compute-tools/internal/pgtest"
)

// TestMain runs the tests; with OPENAPI_COVERAGE=1 it then lists the answers
// api/openapi.yaml documents that no test of this package produced (what the document
// says that only its text vouches for). The tests on real PostgreSQL share one server
// (pgtest.Run).
func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if os.Getenv("OPENAPI_COVERAGE") != "" {
		v, err := openapitest.LoadDefault()
		if err == nil {
			fmt.Printf("documented answers no test produced:\n  %s\n", strings.Join(v.Unexercised(), "\n  "))
		}
	}
	os.Exit(code)
}
