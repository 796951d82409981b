# Boots a throwaway systemd container (systemd-nspawn, --volatile=overlay on the cached
# rootfs, or a throwaway copy of it with ROOT_MODE=disk) and runs commands inside it. Sourced by e2e.sh, demo.sh and bench scripts.
# Recipe: ../shared/reference/systemd-test-harness.md ("interactive style").

NSP=; CPID=

# boot_container ROOTFS OUTDIR [extra nspawn args...]: boots, waits for systemd.
# ROOT_MODE=disk boots a throwaway copy of the rootfs on the host's disk (--ephemeral)
# instead of an overlay whose upper layer is tmpfs: what the container installs (the
# package's binaries) is then on a disk file system, as on a VM, whose page cache behaves
# as a VM's (bench/monitor-usage.sh measures resident sets). Slower to boot: the copy.
NSP_COPY=
boot_container() {
  local rootfs=$1 out=$2; shift 2
  local root=--volatile=overlay waits=400 copies=
  copies() { ls -d "$(dirname "$rootfs")/.#machine.$(basename "$rootfs")"* 2>/dev/null || true; }
  # The copy takes a few seconds (about 520 MB): a longer wait for the container's systemd.
  [ "${ROOT_MODE:-}" = disk ] && { root=--ephemeral; waits=2400; copies=$(copies); }
  mkdir -p "$out"
  systemd-nspawn -D "$rootfs" "$root" --register=no --keep-unit -b --private-network \
    --bind-ro="$REPO/dist":/dist --bind="$out":/out "$@" >"$out/console.log" 2>&1 </dev/null &
  NSP=$!
  trap cleanup_container EXIT
  CPID=
  for _ in $(seq "$waits"); do
    for p in $(pgrep -P "$NSP" || true); do [ "$(cat /proc/"$p"/comm 2>/dev/null)" = systemd ] && CPID=$p; done
    [ -n "$CPID" ] && break
    kill -0 "$NSP" 2>/dev/null || break
    sleep 0.05
  done
  # Which copy is this container's (removed by nspawn when it exits, by cleanup_container
  # when it has to be killed).
  [ "${ROOT_MODE:-}" = disk ] && NSP_COPY=$(copies | grep -vxF -e "${copies:-/nonexistent}" | head -1)
  [ -n "$CPID" ] || { cat "$out/console.log" >&2; die "container did not boot"; }
  local st=
  for _ in $(seq 300); do
    st=$(IN timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
    [ -n "$st" ] && break
    sleep 0.1
  done
  log "container booted: $st"
}

# IN CMD...: runs a command inside the container (all namespaces).
IN() { nsenter -t "$CPID" -a "$@"; }

cleanup_container() {
  if [ -n "$NSP" ] && kill -0 "$NSP" 2>/dev/null; then
    [ -n "$CPID" ] && nsenter -t "$CPID" -a systemctl poweroff --no-block >/dev/null 2>&1 || kill -TERM "$NSP" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$NSP" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSP" 2>/dev/null || true
    wait "$NSP" 2>/dev/null || true
    # A killed nspawn leaves its ephemeral copy of the rootfs (ROOT_MODE=disk) behind.
    if [ -n "$NSP_COPY" ]; then
      rm -rf "$NSP_COPY" "$(dirname "$NSP_COPY")/.#$(basename "$NSP_COPY").lck"
    fi
  fi
  NSP=; NSP_COPY=
}

poweroff_container() {
  IN systemctl poweroff --no-block >/dev/null 2>&1 || true
  local rc=0
  wait "$NSP" || rc=$?
  NSP=; trap - EXIT
  return $rc
}
