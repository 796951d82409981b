#!/usr/bin/env bash
# System test: builds the .deb, boots real systemd in a throwaway systemd-nspawn container
# on a cached Debian 12 rootfs, installs the package and runs test/system inside it.
# Needs root. Results (journal, unit states, test output) land in out/e2e/. E2E_RUN, when
# set, is passed as -test.run (a subset of the tests, while developing).
set -euo pipefail
# A build tag of its own, which the system test finds on /metrics (a build that ignored it
# would say "latest").
export BUILD_TAG="${BUILD_TAG:-system-test}"
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nspawn.sh"
system_test_setup
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/e2e"; rm -rf "$OUT"; mkdir -p "$OUT"
boot_container "$ROOTFS" "$OUT"
rc=0
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || { cat "$OUT/dpkg.log"; rc=1; }
# rsyslog (the log shipping test) is in the rootfs, the system's own rsyslog masked there
# (scripts/rootfs.sh).
log "running the system test inside the container"
if ! IN env COMPUTE_SYSTEM_TEST=1 COMPUTE_SYSTEM_TEST_BUILD_TAG="$BUILD_TAG" /dist/system.test -test.v -test.timeout 10m ${E2E_RUN:+-test.run "$E2E_RUN"} 2>&1 | tee "$OUT/system-test.txt"; then rc=1; fi
IN systemctl status --no-pager compute.target 'compute-*' >"$OUT/status.txt" 2>&1 || true
IN journalctl -b --no-pager -o short-monotonic >"$OUT/journal.txt" 2>&1 || true
poweroff_container || true
grep -qE '^(ok|PASS)' "$OUT/system-test.txt" || rc=1
if [ $rc -ne 0 ]; then log "system test FAILED; see $OUT (journal.txt, status.txt)"; exit 1; fi
log "system test passed"
