#!/usr/bin/env bash
# All the tests: format, vet, staticcheck, unit and integration tests (real PostgreSQL 15,
# real dbus-daemon), then the system test under real systemd (scripts/e2e.sh), lintian
# on the .deb and scripts/rpm-check.sh on the .rpm. Run as root on Debian 12; installs
# what it needs. CI runs exactly this.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
had_rsyslog=$(dpkg-query -W -f='${Status}' rsyslog 2>/dev/null || true)
apt_install postgresql-15 postgresql-client-15 pgbouncer rsyslog dbus systemd-container debootstrap lintian rpm cpio rpmlint ca-certificates git protobuf-compiler libprotobuf-dev
# Debian's rsyslog package starts the system rsyslog, to which journald then forwards
# everything (/var/log/syslog grows); the tests run rsyslogd themselves. When this script
# installed it, the system one is stopped and disabled (where systemd runs).
if [ "$had_rsyslog" != "install ok installed" ] && [ -d /run/systemd/system ]; then
  systemctl disable --now rsyslog.service syslog.socket || die "could not stop the system rsyslog that was just installed"
fi
ensure_tools
cd "$REPO"
mkdir -p out

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || die "gofmt would change: $unformatted"
log "go vet"
go vet ./... || die "go vet failed"
log "staticcheck"
staticcheck ./... || die "staticcheck failed"

log "unit and integration tests"
set +e
go test -count=1 -json -timeout 15m ./... >out/go-test.json
go_rc=$?
set -e
# A readable summary of the JSON stream: failures with their output, then per package.
go run ./internal/tools/testsummary <out/go-test.json || true
[ $go_rc -eq 0 ] || die "go test failed"

log "system test (real systemd in systemd-nspawn)"
bash scripts/e2e.sh

log "lintian"
lintian --tag-display-limit 0 --fail-on error dist/compute-tools_*.deb | tee out/lintian.txt || die "lintian reported errors"

log "rpm-check (the .rpm: files, scriptlets, RHEL-family defaults, rpmlint)"
bash scripts/rpm-check.sh

passed=$(grep -c '"Action":"pass","Package":"[^"]*","Test"' out/go-test.json || true)
failed=$(grep -c '"Action":"fail","Package":"[^"]*","Test"' out/go-test.json || true)
skipped=$(grep -c '"Action":"skip","Package":"[^"]*","Test"' out/go-test.json || true)
sys_passed=$(grep -c -- '--- PASS' out/e2e/system-test.txt || true)
sys_failed=$(grep -c -- '--- FAIL' out/e2e/system-test.txt || true)
echo "tests: $((passed + sys_passed)) passed, $((failed + sys_failed)) failed, $skipped skipped"
