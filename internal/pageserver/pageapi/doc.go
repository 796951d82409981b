// Package pageapi is the code generated from page_service.proto, our description of the
// wire contract of the pageserver's gRPC page service (Neon main's page_api): the
// messages (protoc-gen-go) and the grpc-go service glue (protoc-gen-go-grpc). Only the
// tests' fake pageserver (internal/pageservertest) and the tests of package pageserver's
// hand-written client use it; compute-init does not (internal/archtest keeps grpc-go
// and the protobuf runtime out of it). Regenerate with scripts/gen-proto.sh.
package pageapi
