# Convenience targets; the scripts under scripts/ are the source of truth (and install
# what they need on Debian 12). `check` and `fmt` install nothing and need no root.
.PHONY: build package test e2e demo bench bench-apply bench-neon lint check fmt

# The Go toolchain and Go tools where scripts/lib.sh puts them, after what PATH has.
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

build:
	bash -c 'source scripts/lib.sh && ensure_go && build'
package:
	bash -c 'source scripts/lib.sh && ensure_tools && package'
test:
	bash scripts/test.sh
e2e:
	bash scripts/e2e.sh
demo:
	bash scripts/demo.sh
bench:
	bash bench/restart.sh
bench-apply:
	bash bench/apply.sh
bench-neon:
	bash bench/neon-start.sh

# fmt fails, listing them, when gofmt would change any Go file.
fmt:
	@out=$$(gofmt -l .) || exit 1; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# check is the edit-compile loop: format, vet, staticcheck and the tests, with the tools on
# PATH. Rootless, the tests that need root (real PostgreSQL 15, a system-like D-Bus) skip
# themselves; as root they run too. scripts/test.sh runs everything, the system test included.
check: fmt
	go vet ./...
	@command -v staticcheck >/dev/null || { echo "staticcheck not on PATH: go install honnef.co/go/tools/cmd/staticcheck@$$(sed -n 's/^STATICCHECK_VERSION=\([^ ]*\).*/\1/p' scripts/lib.sh)"; exit 1; }
	staticcheck ./...
	go test -count=1 ./...

# lint is check without the tests; it installs the pinned staticcheck if needed
# (scripts/lib.sh).
lint: fmt
	bash -c 'source scripts/lib.sh && ensure_tools'
	go vet ./...
	PATH="$$PATH:$$(go env GOPATH)/bin" staticcheck ./...
