#!/usr/bin/env bash
# Regenerates internal/pageserver/pageapi from page_service.proto (the pageserver's gRPC
# wire contract): protoc from Debian's protobuf-compiler, the Go plugins at the pinned
# versions below (built into a temporary GOBIN). The generated files are committed; a
# test (internal/pageserver/pageapi) compares them with a fresh run where protoc exists.
#   scripts/gen-proto.sh [OUTDIR]   (default: the package directory itself)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROTOC_GEN_GO_VERSION=v1.36.12      # google.golang.org/protobuf (as in go.mod)
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

ensure_go
[ -f /usr/include/google/protobuf/timestamp.proto ] && command -v protoc >/dev/null 2>&1 || { need_root; apt_install protobuf-compiler libprotobuf-dev; }

pkg="$REPO/internal/pageserver/pageapi"
out=${1:-$pkg}
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
protoc --proto_path="$pkg" --proto_path=/usr/include \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  page_service.proto
log "generated $(cd "$out" && ls ./*.pb.go | tr '\n' ' ')"
