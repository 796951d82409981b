# Convenience targets; the scripts under scripts/ are the source of truth (and install
# what they need on Debian 12).
.PHONY: build package test e2e demo bench bench-apply bench-neon lint
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
lint:
	bash -c 'source scripts/lib.sh && ensure_tools && gofmt -l . && go vet ./... && staticcheck ./...'
