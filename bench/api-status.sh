#!/usr/bin/env bash
# GET /status of compute-api against a minimal net/http handler returning the same bytes,
# in the same run, over loopback (issue 11, "Performance"):
#  - throughput: wrk (Debian's) with the same threads, connections and duration on both;
#  - latency at a fixed rate (RATE requests/s, default 2000): bench/apistatus `rate`, an
#    open-loop Go client that times each request from when it was due (Debian has no
#    wrk2);
#  ROUNDS rounds, the order of the two servers alternating; medians and spread printed.
# compute-api is the real binary (`compute-api serve`), run directly, without systemd: a
# private dbus-daemon stands in for the system bus (it needs one for its bus name), the
# systemd questions of its start fail and are skipped (a warning in its log), and it logs
# to a file at the default level (info) instead of the journal. The state directory has a
# running record and the config file a JWKS; the token is minted by `compute-api token`.
# Figures are reported, never asserted. Short smoke: ROUNDS=1 DURATION=2 RATE_DURATION=2.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
ensure_go
command -v wrk >/dev/null && command -v dbus-daemon >/dev/null && command -v curl >/dev/null \
  || { need_root; apt_install wrk dbus-daemon curl; }

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}          # seconds of each wrk run
THREADS=${THREADS:-1}             # wrk threads (the machine has 2 cores: one for wrk, one for the server)
CONNS=${CONNS:-32}                # wrk connections
RATE=${RATE:-2000}                # fixed-rate run, requests/s
RATE_DURATION=${RATE_DURATION:-20}
API_PORT=${API_PORT:-39080}
MIN_PORT=${MIN_PORT:-39180}

# PIN=1 (the default with 2 or more CPUs): the servers on one CPU, the load generators on
# another, so that the client's own scheduling does not land in the server's figures.
PIN=${PIN-$([ "$(nproc)" -ge 2 ] && echo 1)}
SERVER_CPU_N=${SERVER_CPU_N:-1}; CLIENT_CPU_N=${CLIENT_CPU_N:-0}
SERVER_CPU=; CLIENT_CPU=
if [ -n "$PIN" ]; then SERVER_CPU="taskset -c $SERVER_CPU_N"; CLIENT_CPU="taskset -c $CLIENT_CPU_N"; fi

OUT="$REPO/out/bench-api-status"; rm -rf "$OUT"; mkdir -p "$OUT"
W=$(mktemp -d /tmp/bench-api-status.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

log "building compute-api and bench/apistatus"
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$W/compute-api" ./cmd/compute-api \
  && CGO_ENABLED=0 go build -trimpath -o "$W/apistatus" ./bench/apistatus) || die "go build failed"

dbus-daemon --session --nofork --nopidfile --address="unix:path=$W/bus" 2>"$OUT/dbus.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$W/bus" ] && break; sleep 0.05; done
[ -S "$W/bus" ] || die "dbus-daemon did not start"

"$W/compute-api" keygen --key-out "$W/key" --jwks-out "$W/jwks.json"
printf '{"spec": null, "compute_ctl_config": {"jwks": %s}}\n' "$(cat "$W/jwks.json")" >"$W/config.json"
mkdir -p "$W/state"
now=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
cat >"$W/state/state.json" <<JSON
{"status": "running", "error": null, "start_time": "$now", "last_active": null,
 "tenant": "c9269c359e9a199fad1ea0981246a78f", "timeline": "ece7de74d4b8cbe5433a68ce4d1b97b4",
 "mode": "primary", "storage": "neon", "terminate_lsn": null, "metrics": {}, "counters": {"lfc": {}},
 "seq": 1, "updated_at": "$now"}
JSON

COMPUTE_DBUS_ADDRESS="unix:path=$W/bus" DBUS_SYSTEM_BUS_ADDRESS="unix:path=$W/bus" \
  $SERVER_CPU "$W/compute-api" serve --state-dir "$W/state" --config "$W/config.json" --compute-id bench \
  --external-http-addr 127.0.0.1 --external-http-port "$API_PORT" --internal-http-port $((API_PORT + 1)) \
  >"$OUT/compute-api.log" 2>&1 & pids+=($!)
TOKEN=$("$W/compute-api" token --key "$W/key" --compute-id bench --ttl 24h)
AUTH="Authorization: Bearer $TOKEN"
API="http://127.0.0.1:$API_PORT/status"
MIN="http://127.0.0.1:$MIN_PORT/status"
for _ in $(seq 100); do curl -fsS -H "$AUTH" -o "$W/body" "$API" 2>/dev/null && break; sleep 0.1; done
grep -q '"status":"running"' "$W/body" || die "compute-api did not answer /status (see $OUT/compute-api.log)"
$SERVER_CPU "$W/apistatus" minimal -addr "127.0.0.1:$MIN_PORT" -body "$W/body" & pids+=($!)
for _ in $(seq 100); do curl -fsS -o "$W/body.min" "$MIN" 2>/dev/null && break; sleep 0.1; done
cmp -s "$W/body" "$W/body.min" || die "the minimal handler does not answer the same bytes"
log "both answer $(wc -c <"$W/body") bytes; $ROUNDS rounds"

throughput() { # URL -> requests/s
  $CLIENT_CPU wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -H "$AUTH" "$1" >"$W/wrk.txt" 2>&1 || die "wrk failed: $(cat "$W/wrk.txt")"
  grep -q 'Non-2xx' "$W/wrk.txt" && die "non-2xx answers: $(cat "$W/wrk.txt")"
  awk '/^Requests\/sec:/ {print $2}' "$W/wrk.txt"
}
fixed() { # URL -> "p50 p99 errors achieved svc_p50 svc_p99"
  $CLIENT_CPU "$W/apistatus" rate -url "$1" -rps "$RATE" -duration "${RATE_DURATION}s" -authorization "Bearer $TOKEN" >"$W/rate.txt" \
    || die "fixed-rate client failed"
  sed -E 's/.*errors=([0-9]+) achieved_rps=([0-9.]+) p50_ms=([0-9.]+) p90_ms=[0-9.]+ p99_ms=([0-9.]+).* svc_p50_ms=([0-9.]+) svc_p99_ms=([0-9.]+).*/\3 \4 \1 \2 \5 \6/' "$W/rate.txt"
}

# Warm-up (both), not counted.
DURATION=2 throughput "$API" >/dev/null; DURATION=2 throughput "$MIN" >/dev/null

: >"$OUT/rounds.txt"
for r in $(seq "$ROUNDS"); do
  order="api min"; [ $((r % 2)) = 0 ] && order="min api"
  for who in $order; do
    url=$API; [ "$who" = min ] && url=$MIN
    rps=$(throughput "$url")
    read -r p50 p99 errs achieved sp50 sp99 < <(fixed "$url")
    echo "round=$r server=$who rps=$rps p50_ms=$p50 p99_ms=$p99 svc_p50_ms=$sp50 svc_p99_ms=$sp99 rate_errors=$errs rate_achieved=$achieved" | tee -a "$OUT/rounds.txt"
  done
done

# med KEY SERVER -> "median min max" over the rounds
med() {
  grep "server=$2 " "$OUT/rounds.txt" | sed -E "s/.* $1=([0-9.]+).*/\1/" | sort -g \
    | awk '{v[NR]=$1} END {m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.3f %.3f %.3f\n", m, v[1], v[NR]}'
}
ratios() { # per round compute-api rps / minimal rps -> "median min max"
  for r in $(seq "$ROUNDS"); do
    a=$(grep "round=$r server=api " "$OUT/rounds.txt" | sed -E 's/.* rps=([0-9.]+).*/\1/')
    m=$(grep "round=$r server=min " "$OUT/rounds.txt" | sed -E 's/.* rps=([0-9.]+).*/\1/')
    awk -v a="$a" -v m="$m" 'BEGIN {printf "%.3f\n", a/m}'
  done | sort -g | awk '{v[NR]=$1} END {m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.3f %.3f %.3f\n", m, v[1], v[NR]}'
}
{
  echo
  echo "GET /status, $ROUNDS rounds: wrk -t$THREADS -c$CONNS -d${DURATION}s; fixed rate $RATE/s for ${RATE_DURATION}s (median [min..max])"
  printf '%-22s %-30s %-30s\n' "" "compute-api" "minimal net/http"
  for k in rps p50_ms p99_ms svc_p50_ms svc_p99_ms; do
    read -r am al ah < <(med "$k" api); read -r mm ml mh < <(med "$k" min)
    printf '%-22s %-30s %-30s\n' "$k" "$am [$al..$ah]" "$mm [$ml..$mh]"
  done
  read -r rm rl rh < <(ratios)
  echo "throughput ratio compute-api/minimal: $rm [$rl..$rh] (target >= 0.5)"
  echo "compute-api p99 at $RATE/s: $(med p99_ms api | cut -d' ' -f1) ms from the due time, $(med svc_p99_ms api | cut -d' ' -f1) ms from the send (target < 1 ms)"
  if [ -n "$PIN" ]; then echo "CPUs: servers on CPU $SERVER_CPU_N, load generators on CPU $CLIENT_CPU_N"; else echo "CPUs: not pinned"; fi
} | tee "$OUT/results.txt"
