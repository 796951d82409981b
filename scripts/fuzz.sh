#!/usr/bin/env bash
# Runs every fuzz target of the repository for EXECS executions (default 1,000,000), one
# target at a time with one fuzzing worker (-parallel=1), and prints the figures that
# docs/fuzzing.md records. Not part of CI (CI runs each target's seed corpus as a normal
# test, `go test ./...`).
#
#   scripts/fuzz.sh                 # every target, 1M executions each
#   EXECS=100000 scripts/fuzz.sh Untar   # targets whose name matches a regexp
#
# Logs go to out/fuzz/<target>.log. A failure stops the script: the failing input is in
# <package>/testdata/fuzz/<target>/ (commit it with the fix: it then runs in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
EXECS=${EXECS:-1000000}
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
mkdir -p out/fuzz

# package target
targets=(
  "./internal/safetar FuzzNames"
  "./internal/vmmonitor FuzzDecodeAgentFrame"
  "./internal/vmmonitor FuzzNegotiate"
  "./internal/spec FuzzParseConfig"
  "./internal/api FuzzRouteDecoders"
  "./internal/apply FuzzPlanIdempotent"
  "./internal/pageserver FuzzUntar"
  "./internal/extensions FuzzUnpack"
)

for t in "${targets[@]}"; do
  pkg=${t% *}
  name=${t#* }
  if [[ -n "${1:-}" && ! $name =~ $1 ]]; then
    continue
  fi
  if ! grep -qs "func $name(" "$pkg"/*_test.go; then
    echo "== $name: not in $pkg, skipped"
    continue
  fi
  echo "== $name ($pkg), $EXECS executions"
  start=$(date +%s)
  "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "${EXECS}x" -parallel 1 "$pkg" >"out/fuzz/$name.log" 2>&1 || {
    tail -30 "out/fuzz/$name.log"
    echo "== $name FAILED (log: out/fuzz/$name.log)"
    exit 1
  }
  end=$(date +%s)
  last=$(grep -E '^fuzz: elapsed' "out/fuzz/$name.log" | tail -1)
  echo "   $last"
  echo "   wall time $((end - start)) s; result: $(tail -1 "out/fuzz/$name.log")"
done
