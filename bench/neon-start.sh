#!/usr/bin/env bash
# Neon-mode cold starts against the protocol fakes (pageserver, safekeepers, the
# --sync-safekeepers shim), in a throwaway systemd container as the system test:
#  - "first start": the pageserver serves a fresh cluster, the spec apply creates the
#    spec's role and database;
#  - "existing endpoint": the pageserver serves a basebackup of the compute as the first
#    start left it (Neon's storage keeps a compute's data), Neon's usual cold start.
# STARTS cold starts each (default 15); prints the medians of /metrics.json, of our
# overhead (total - sync - basebackup - Postgres start) and of the unit timeline
# (test/system/bench_test.go). Figures are reported, never asserted. Run as root.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/../scripts/nspawn.sh"
system_test_setup
STARTS=${STARTS:-15}
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/bench-neon"; rm -rf "$OUT"; mkdir -p "$OUT"
# Debian's own cluster is masked so that it does not compete for the cores.
boot_container "$ROOTFS" "$OUT" systemd.mask=postgresql@15-main.service
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || die "dpkg -i failed"
rc=0
IN env COMPUTE_SYSTEM_TEST=1 COMPUTE_BENCH_NEON_STARTS="$STARTS" /dist/system.test -test.run '^TestNeonStartBench$' \
  -test.timeout 20m 2>&1 | grep -v '^ *bench_test.go' | tee "$OUT/results.txt" || rc=1
IN journalctl -b --no-pager -o short-precise >"$OUT/journal.txt" 2>&1 || true
poweroff_container || true
grep -q '^PASS' "$OUT/results.txt" || rc=1
[ $rc -eq 0 ] || die "benchmark failed; see $OUT"
log "results in $OUT/results.txt"
