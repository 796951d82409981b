package api

import "github.com/computetools/compute-tools/internal/state"

// StatusOf is the ComputeStatusResponse body for a record, as GET /status answers it;
// the local `compute-init status` prints the same.
func StatusOf(r state.Record) any { return newStatusResponse(r) }
