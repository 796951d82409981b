#!/usr/bin/env bash
# compute-monitor's CPU and memory, in a throwaway systemd container (as the system test):
# the compute runs with the default 500 ms interval; for DURATION seconds (default 600) on an
# idle Postgres, then for DURATION seconds under pgbench (4 clients, as a spec role: every
# round sees activity and last_active is written once a second). CPU is the monitor process's
# time on a CPU over the phase as a share of one core, as the scheduler counts it
# (/proc/PID/schedstat, exact) and tick-sampled (/proc/PID/stat user+system); memory is its
# resident set (VmRSS, sampled every 10 s: median and max) and its peak (VmHWM). The same
# figures for compute-api, the other long-running daemon, are printed beside them. Figures are
# reported, never asserted. Run as root, on a quiet machine.
# ROOT_MODE=disk installs the package on a disk file system (a throwaway copy of the rootfs,
# scripts/nspawn.sh) rather than on the tmpfs upper layer of the default volatile root: the
# resident set of a daemon depends on whether its binary's pages can leave the page cache,
# which they cannot on tmpfs (internal/memtrim); a VM's root is a disk. The first line of
# the results says which file system the binary was on.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/../scripts/nspawn.sh"
need_root
apt_install systemd-container debootstrap ca-certificates
ensure_tools
[ "${SKIP_PACKAGE:-}" = 1 ] || package
DURATION=${DURATION:-600}
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/bench-monitor"; rm -rf "$OUT"; mkdir -p "$OUT"
boot_container "$ROOTFS" "$OUT" systemd.mask=postgresql@15-main.service
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || die "dpkg -i failed"

# MONITOR_ENV: extra lines for /etc/default/compute-tools (e.g. GOGC=50), to compare.
IN env DURATION="$DURATION" MONITOR_ENV="${MONITOR_ENV:-}" sh -s <<'INNER' | tee "$OUT/results.txt"
set -e
echo "binary on: $(stat -f -c %T /usr/bin/compute-monitor)"
[ -z "$MONITOR_ENV" ] || { printf '%s\n' "$MONITOR_ENV" >>/etc/default/compute-tools; echo "with $MONITOR_ENV"; }
compute-api keygen --key-out /root/k --jwks-out /root/jwks.json >/dev/null
md5=$(printf '%s' 'benchbench' | md5sum | cut -d' ' -f1)
cat >/etc/compute/config.json <<JSON
{"compute_ctl_config": {"jwks": $(cat /root/jwks.json)},
 "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "cluster": {"roles": [{"name": "bench", "encrypted_password": "$md5"}],
              "databases": [{"name": "bench", "owner": "bench"}]}}}
JSON
chgrp postgres /etc/compute/config.json
systemctl start compute.target
compute-init status --wait running --timeout 120s >/dev/null
sleep 15   # past the monitor's start and its first installed-extensions collection
export PGPASSWORD=bench
conn="host=127.0.0.1 port=55432 user=bench dbname=bench"
/usr/lib/postgresql/15/bin/pgbench -q -i -s 10 "$conn" >/dev/null 2>&1

ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{ printf "%d", ($14 + $15) * 1000 / t }' "/proc/$1/stat"; }  # ms, tick-sampled
# The scheduler's own account of the time on a CPU (ns, exact): the user+system time above is
# sampled at the scheduler's tick and counted in whole ticks (10 ms), coarse for a process that
# wakes briefly and often.
# Summed over the process's threads (/proc/PID/schedstat alone is the main thread's): Go runs
# its work on whichever thread; the runtime keeps its threads, so none is lost by exiting.
run_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%d", s }'; }
rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
phase() { # name, then a command to run in the background for the phase (or "")
  name=$1; shift
  mon=$(systemctl show -p MainPID --value compute-monitor); api=$(systemctl show -p MainPID --value compute-api)
  m0=$(cpu "$mon"); a0=$(cpu "$api"); mr0=$(run_ns "$mon"); ar0=$(run_ns "$api"); t0=$(date +%s%N)
  if [ -n "$1" ]; then sh -c "$1" >/tmp/phase-$name.log 2>&1 & bg=$!; else bg=; fi
  : >/tmp/rss-$name
  end=$(( $(date +%s) + DURATION ))
  while [ "$(date +%s)" -lt "$end" ]; do echo "$(rss "$mon") $(rss "$api")" >>/tmp/rss-$name; sleep 10; done
  [ -n "$bg" ] && wait "$bg" || true
  m1=$(cpu "$mon"); a1=$(cpu "$api"); mr1=$(run_ns "$mon"); ar1=$(run_ns "$api"); t1=$(date +%s%N)
  wall=$(( (t1 - t0) / 1000000 ))
  [ "$(systemctl show -p MainPID --value compute-monitor)" = "$mon" ] || echo "WARNING: compute-monitor restarted during $name"
  med() { sort -n | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)] }'; }
  max() { sort -n | tail -1; }
  echo "$name wall_ms=$wall"
  echo "  compute-monitor resident: $(awk '/^(Rss|Anonymous):/{printf "%s %s kB; ", $1, $2}' /proc/$mon/smaps_rollup)(the rest is the binary's pages)"
  pct() { awk -v c="$1" -v w=$wall 'BEGIN{printf "%.3f", 100*c/w}'; }
  printf '  compute-monitor cpu_run_ms=%d cpu_run_pct_of_core=%s (schedstat) cpu_tick_ms=%d cpu_tick_pct_of_core=%s (stat) rss_kb_median=%s rss_kb_max=%s vmhwm_kb=%s\n' \
    $(( (mr1-mr0)/1000000 )) "$(pct $(( (mr1-mr0)/1000000 )))" $((m1-m0)) "$(pct $((m1-m0)))" "$(cut -d' ' -f1 /tmp/rss-$name | med)" "$(cut -d' ' -f1 /tmp/rss-$name | max)" "$(hwm "$mon")"
  printf '  compute-api     cpu_run_ms=%d cpu_run_pct_of_core=%s (schedstat) cpu_tick_ms=%d cpu_tick_pct_of_core=%s (stat) rss_kb_median=%s rss_kb_max=%s vmhwm_kb=%s\n' \
    $(( (ar1-ar0)/1000000 )) "$(pct $(( (ar1-ar0)/1000000 )))" $((a1-a0)) "$(pct $((a1-a0)))" "$(cut -d' ' -f2 /tmp/rss-$name | med)" "$(cut -d' ' -f2 /tmp/rss-$name | max)" "$(hwm "$api")"
}
phase idle ""
phase pgbench "/usr/lib/postgresql/15/bin/pgbench -c 4 -j 2 -T $DURATION -P 60 '$conn'"
grep -E "^tps|latency average" /tmp/phase-pgbench.log | sed 's/^/  pgbench: /' || true
echo "state record writes by then: seq=$(compute-init status --full | tr -d ' ,' | grep '"seq"' | head -1)"
INNER
poweroff_container || true
