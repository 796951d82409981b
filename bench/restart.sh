#!/usr/bin/env bash
# Startup benchmark, in a throwaway systemd container (as the system test):
#  - first start (initdb included): `systemctl start compute.target` -> status running -> first
#    query as a spec role over TCP;
#  - restart with PGDATA kept and the same spec, ITERATIONS times;
#  - side by side, a minimal Type=notify unit that runs postgres directly on the same PGDATA,
#    from `systemctl start` to the same first query;
#  - resident memory of compute-api (our only long-running daemon so far).
# Prints a table; figures are reported, never asserted. Run as root.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/../scripts/nspawn.sh"
need_root
apt_install systemd-container debootstrap ca-certificates
ensure_tools
[ "${SKIP_PACKAGE:-}" = 1 ] || package
ITERATIONS=${ITERATIONS:-20}
ROOTFS=$(bash "$REPO/scripts/rootfs.sh")
OUT="$REPO/out/bench"; rm -rf "$OUT"; mkdir -p "$OUT"
# Debian's own cluster is masked so that it does not compete for the two cores.
boot_container "$ROOTFS" "$OUT" systemd.mask=postgresql@15-main.service
IN sh -c 'dpkg -i /dist/compute-tools_*.deb' >"$OUT/dpkg.log" 2>&1 || die "dpkg -i failed"

IN env ITERATIONS="$ITERATIONS" sh -s <<'INNER' | tee "$OUT/results.txt"
set -e
compute-api keygen --key-out /root/k --jwks-out /root/jwks.json >/dev/null
md5=$(printf '%s' 'benchbench' | md5sum | cut -d' ' -f1)
cat >/etc/compute/config.json <<JSON
{"compute_ctl_config": {"jwks": $(cat /root/jwks.json)},
 "spec": {"format_version": 1.0, "suspend_timeout_seconds": -1,
  "cluster": {"roles": [{"name": "bench", "encrypted_password": "$md5"}],
              "databases": [{"name": "bench", "owner": "bench"}]}}}
JSON
chgrp postgres /etc/compute/config.json
now() { date +%s%N; }
query() { # first query as the spec role, retried until it works
  for i in $(seq 2000); do
    PGPASSWORD=bench psql -X -q -At "host=127.0.0.1 port=55432 user=bench dbname=bench connect_timeout=2" -c 'select 1' >/dev/null 2>&1 && return 0
    sleep 0.005
  done; return 1; }
stop_all() { systemctl stop compute.target compute-configure compute-postgres compute-init compute-api bench-pg 2>/dev/null || true; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

t0=$(now); systemctl start compute.target; compute-init status --wait running --timeout 120s >/dev/null; t1=$(now); query; t2=$(now)
echo "first_start running_ms=$(ms $t0 $t1) first_query_ms=$(ms $t0 $t2)"
compute-init status --full | grep -E '"(start_postgres_ms|config_ms|total_startup_ms)"' | tr -d ' ,' | tr '\n' ' '; echo
pid=$(systemctl show -p MainPID --value compute-api)
echo "compute-api rss_kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status) (pid $pid, after first start)"

cat >/etc/systemd/system/bench-pg.service <<UNIT
[Service]
Type=notify
User=postgres
RuntimeDirectory=compute-postgres
ExecStart=/usr/lib/postgresql/15/bin/postgres -D /var/db/postgres/compute
KillMode=mixed
KillSignal=SIGINT
UNIT
systemctl daemon-reload
for i in $(seq "$ITERATIONS"); do
  stop_all
  t0=$(now); systemctl start compute.target
  compute-init status --wait running --timeout 120s >/dev/null || { journalctl -b -u 'compute*' --no-pager | tail -40; exit 1; }
  t1=$(now); query; t2=$(now)
  echo "restart compute running_ms=$(ms $t0 $t1) first_query_ms=$(ms $t0 $t2)"
  stop_all
  t0=$(now); systemctl start bench-pg; t1=$(now); query; t2=$(now)
  echo "restart baseline active_ms=$(ms $t0 $t1) first_query_ms=$(ms $t0 $t2)"
done
stop_all
systemctl start compute.target; compute-init status --wait running >/dev/null
pid=$(systemctl show -p MainPID --value compute-api)
for i in $(seq 200); do curl -s -o /dev/null -H "Authorization: Bearer $(compute-api token --key /root/k --compute-id compute-local)" http://127.0.0.1:3080/status; done 2>/dev/null &
wait
echo "compute-api rss_kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status) (after 200 /status requests)"
INNER
poweroff_container || true

awk '
/^restart compute/ { split($3,a,"="); split($4,b,"="); cr[++nc]=a[2]; cq[nc]=b[2] }
/^restart baseline/ { split($3,a,"="); split($4,b,"="); br[++nb]=a[2]; bq[nb]=b[2] }
function med(arr, n,   i,j,t,c) { for(i=1;i<=n;i++) c[i]=arr[i]; for(i=1;i<=n;i++) for(j=i+1;j<=n;j++) if (c[j]<c[i]) {t=c[i];c[i]=c[j];c[j]=t}; return (n%2)? c[(n+1)/2] : (c[n/2]+c[n/2+1])/2 }
END {
  if (nc == 0 || nb == 0) exit 1
  printf "\nmedian of %d restarts (PGDATA kept, same spec), systemctl start -> first query as a spec role:\n", nc
  printf "  compute.target          %6.0f ms (status running at %.0f ms)\n", med(cq,nc), med(cr,nc)
  printf "  minimal postgres unit   %6.0f ms (unit active at %.0f ms)\n", med(bq,nb), med(br,nb)
  printf "  ratio                   %6.2fx\n", med(cq,nc)/med(bq,nb)
}' "$OUT/results.txt" | tee -a "$OUT/results.txt"
