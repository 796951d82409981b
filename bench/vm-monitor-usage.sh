#!/usr/bin/env bash
# The vm-monitor's CPU and memory (`compute-monitor vm-monitor`, compute-vm-monitor.service), in
# a throwaway systemd container (as the system test), with AUTOSCALING=true and the compute
# running: for DURATION seconds (default 300) with no agent connected (idle: the cgroup watcher
# alone), then for DURATION seconds with an agent connected that health-checks every 5 s, the
# real agent's rate (the system test binary in its agent mode, internal/vmmonitor/agenttest).
# CPU is the vm-monitor process's time on a CPU over the phase as a share of one core, as the
# scheduler counts it (/proc/PID/schedstat, exact) and as the tick-sampled user+system time
# (/proc/PID/stat, counted in 10 ms ticks); memory is its resident set (VmRSS, sampled every 10 s: median and max) and
# its peak (VmHWM). Figures are reported, never asserted. Run as root, on a quiet machine.
#
# Where the units' cgroups have no memory controller (systemd-nspawn on a host whose memory
# controller is bound to cgroup v1, as the 2-core development VM), the watcher finds no
# memory.stat and, instead of reading it every 100 ms, asks systemd for the cgroup, backing off
# from once a second to once every 30 s, and wakes only for those lookups: the first line of the
# results says which of the two was measured.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/../scripts/nspawn.sh"
need_root
apt_install systemd-container debootstrap ca-certificates
ensure_tools
# SKIP_PACKAGE=1 reuses dist/ as it is: the .deb and system.test must be there already.
if [ "${SKIP_PACKAGE:-}" != 1 ]; then package; build_system_test; fi
DURATION=${DURATION:-300}
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/bench-vm-monitor"; rm -rf "$OUT"; mkdir -p "$OUT"
boot_container "$ROOTFS" "$OUT" systemd.mask=postgresql@15-main.service
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || die "dpkg -i failed"

IN env DURATION="$DURATION" sh -s <<'INNER' | tee "$OUT/results.txt"
set -e
echo "binary on: $(stat -f -c %T /usr/bin/compute-monitor) (tmpfs: the default volatile root; ROOT_MODE=disk puts it on a disk file system, as on a VM: see bench/monitor-usage.sh)"
compute-api keygen --key-out /root/k --jwks-out /root/jwks.json >/dev/null
md5=$(printf '%s' 'benchbench' | md5sum | cut -d' ' -f1)
cat >/etc/compute/config.json <<JSON
{"compute_ctl_config": {"jwks": $(cat /root/jwks.json)},
 "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "cluster": {"roles": [{"name": "bench", "encrypted_password": "$md5"}],
              "databases": [{"name": "bench", "owner": "bench"}]}}}
JSON
chgrp postgres /etc/compute/config.json
echo 'AUTOSCALING=true' >>/etc/default/compute-tools
systemctl daemon-reload
systemctl start compute.target
compute-init status --wait running --timeout 120s >/dev/null
# Nothing waits for the vm-monitor (it is off the start path): wait for it here.
for _ in $(seq 100); do systemctl is-active --quiet compute-vm-monitor && break; sleep 0.1; done
systemctl is-active --quiet compute-vm-monitor || { echo "compute-vm-monitor is not active"; systemctl status --no-pager compute-vm-monitor; exit 1; }
sleep 15   # past the start of every unit of the compute
cg=$(systemctl show -p ControlGroup --value compute-postgres)
if [ -r "/sys/fs/cgroup$cg/memory.stat" ]; then
  echo "watcher: reads /sys/fs/cgroup$cg/memory.stat every 100 ms"
else
  echo "watcher: no /sys/fs/cgroup$cg/memory.stat (no memory controller here): its lookups through systemd back off (1 s doubling to 30 s) instead of reading memory.stat every 100 ms"
fi

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
med() { sort -n | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)] }'; }
max() { sort -n | tail -1; }
phase() { # name, then a command to run in the background for the phase (or "")
  name=$1; shift
  vm=$(systemctl show -p MainPID --value compute-vm-monitor)
  c0=$(cpu "$vm"); r0=$(run_ns "$vm"); t0=$(date +%s%N)
  if [ -n "$1" ]; then sh -c "$1" >/tmp/phase-$name.log 2>&1 & bg=$!; else bg=; fi
  : >/tmp/rss-$name
  end=$(( $(date +%s) + DURATION ))
  while [ "$(date +%s)" -lt "$end" ]; do rss "$vm" >>/tmp/rss-$name; sleep 10; done
  if [ -n "$bg" ]; then wait "$bg" || echo "WARNING: the $name command failed (see below)"; fi
  c1=$(cpu "$vm"); r1=$(run_ns "$vm"); t1=$(date +%s%N)
  wall=$(( (t1 - t0) / 1000000 ))
  [ "$(systemctl show -p MainPID --value compute-vm-monitor)" = "$vm" ] || echo "WARNING: compute-vm-monitor restarted during $name"
  echo "$name wall_ms=$wall"
  echo "  vm-monitor resident: $(awk '/^(Rss|Anonymous):/{printf "%s %s kB; ", $1, $2}' /proc/$vm/smaps_rollup)(the rest is the binary's pages)"
  printf '  vm-monitor cpu_run_ms=%d cpu_run_pct_of_core=%s (schedstat) cpu_tick_ms=%d cpu_tick_pct_of_core=%s (stat) rss_kb_median=%s rss_kb_max=%s vmhwm_kb=%s\n' \
    $(( (r1-r0)/1000000 )) "$(awk -v c=$(( (r1-r0)/1000 )) -v w=$wall 'BEGIN{printf "%.3f", 100*c/1000/w}')" \
    $((c1-c0)) "$(awk -v c=$((c1-c0)) -v w=$wall 'BEGIN{printf "%.3f", 100*c/w}')" "$(med </tmp/rss-$name)" "$(max </tmp/rss-$name)" "$(hwm "$vm")"
  if [ -n "$bg" ]; then sed 's/^/  agent: /' /tmp/phase-$name.log; fi
}
phase idle ""
phase health-checks "VMMON_AGENT_FOR=${DURATION}s /dist/system.test"
echo "journal of compute-vm-monitor during the run: $(journalctl -u compute-vm-monitor -o cat --no-pager | wc -l) lines, $(journalctl -u compute-vm-monitor -p warning -o cat --no-pager | wc -l) warnings"
INNER
poweroff_container || true
