#!/usr/bin/env bash
# The main job: builds the .deb, boots a throwaway systemd container (Debian 12, real
# systemd, private network), installs the package, starts a standalone compute with a spec
# and shows its /status JSON and a psql query made as a spec role. Run as root.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nspawn.sh"
need_root
apt_install systemd-container debootstrap ca-certificates
ensure_tools
package
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/demo"; rm -rf "$OUT"; mkdir -p "$OUT"
boot_container "$ROOTFS" "$OUT"
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || { cat "$OUT/dpkg.log"; die "dpkg -i failed"; }
log "package installed; writing /etc/compute/config.json"

IN sh -s <<'INNER'
set -e
compute-api keygen --key-out /root/compute.key --jwks-out /root/jwks.json
md5=$(printf '%s' 'demo-passworddemo' | md5sum | cut -d' ' -f1)
cat >/etc/compute/config.json <<JSON
{
  "compute_ctl_config": {"jwks": $(cat /root/jwks.json)},
  "spec": {
    "format_version": 1.0,
    "suspend_timeout_seconds": -1,
    "cluster": {
      "cluster_id": "demo",
      "roles": [{"name": "demo", "encrypted_password": "$md5", "options": null}],
      "databases": [{"name": "demo", "owner": "demo", "options": null}],
      "settings": [{"name": "max_connections", "value": "50", "vartype": "integer"}]
    }
  }
}
JSON
chgrp postgres /etc/compute/config.json && chmod 0640 /etc/compute/config.json
INNER

log "systemctl start compute.target"
start=$(date +%s%N)
IN systemctl start compute.target
IN compute-init status --wait running --timeout 90s >/dev/null || {
  IN journalctl -u 'compute-*' --no-pager | tail -40; die "the compute did not reach running"; }
echo "compute running $(( ($(date +%s%N) - start) / 1000000 )) ms after systemctl start"
echo
echo "\$ curl -H 'Authorization: Bearer <token>' http://127.0.0.1:3080/status"
IN sh -c 'curl -s -H "Authorization: Bearer $(compute-api token --key /root/compute.key --compute-id compute-local)" http://127.0.0.1:3080/status' | tee "$OUT/status.json"
echo; echo
echo "\$ psql 'host=127.0.0.1 port=55432 user=demo dbname=demo' -c 'select current_user, ...'"
IN env PGPASSWORD=demo-password psql "host=127.0.0.1 port=55432 user=demo dbname=demo" \
  -c "select current_user, current_database(), pg_size_pretty(pg_database_size(current_database())) as size, split_part(version(), ' ', 2) as postgres" | tee "$OUT/psql.txt"
echo "\$ systemctl list-units 'compute*'"
IN systemctl list-units --no-pager --all 'compute*'
echo
echo "\$ journalctl -u compute-init -u compute-configure -o cat"
IN journalctl --no-pager -o cat -u compute-init -u compute-configure | tail -12
poweroff_container || true
log "done; the container is gone (its rootfs was a throwaway overlay). Logs: $OUT"
