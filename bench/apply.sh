#!/usr/bin/env bash
# Spec apply at scale (issue 4): 100 roles and 100 databases on a fresh PostgreSQL 15
# (pgtest, fsync=off), our complete first apply side by side with a psql script holding
# only the 100 CREATE ROLE and 100 CREATE DATABASE statements, then a no-op re-apply and a
# one-role change. Figures are printed (and written to out/bench-apply.txt), never
# asserted. Needs root and /usr/lib/postgresql/15/bin; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
export PATH="/usr/local/go/bin:$PATH"
COMPUTE_BENCH=1 go test -run '^$' -bench BenchmarkApply100x100 -benchtime=1x -count=1 ./internal/apply/ | tee out/bench-apply.txt
