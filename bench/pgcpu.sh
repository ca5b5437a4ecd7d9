#!/usr/bin/env bash
# Postgres CPU per call, by backend: runs one cart-bench scenario against a
# running server and charges the CPU each Postgres process used meanwhile
# (utime + stime from /proc) to the calls made, one line per backend (its
# application name and what it ran last), then the total.
#
#   bench/pgcpu.sh http://127.0.0.1:30171 SERVER_PID IDS_FILE [clients] [scenario]
#
# IDS_FILE: cart ids, one a line (cart-bench --cart-ids). Environment:
# PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres), DURATION (10), BIN
# (target/release), BENCH_ARGS (more cart-bench flags, e.g. --request-ids).
# Used to find what a change costs Postgres (e.g. the event feed's head
# computation, a statement planned at every call).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
ADDR=$1 SERVER_PID=$2 IDS=$3 CLIENTS=${4:-16} SCENARIO=${5:-add-items}
DURATION=${DURATION:-10}
BIN=${BIN:-target/release}
TICKS=$(getconf CLK_TCK)

snapshot() { for p in $(pgrep -x postgres); do echo "$p $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"; done; }
backends() {
    psql -Atd postgres -c "SELECT pid, coalesce(nullif(application_name, ''), backend_type) || ': ' || \
        coalesce(left(regexp_replace(query, '\s+', ' ', 'g'), 40), '') FROM pg_stat_activity"
}

declare -A BEFORE=()
while read -r p t; do BEFORE[$p]=$t; done < <(snapshot)
NAMES=$(mktemp)
trap 'rm -f "$NAMES"' EXIT
backends >"$NAMES"
# shellcheck disable=SC2086 # BENCH_ARGS: several flags
JSON=$("$BIN/cart-bench" --scenario "$SCENARIO" --addr "$ADDR" --cart-ids "$IDS" --concurrency "$CLIENTS" \
    --duration "${DURATION}s" --warmup 0s --server-pid "$SERVER_PID" ${BENCH_ARGS:-} 2>&1 | sed -n 's/^JSON //p')
backends >>"$NAMES"
CALLS=$(echo "$JSON" | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r["calls_all"])')
echo "$JSON" | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
o = list(r["ops"].values())[0]
print("%.0f/s, server CPU %.0f us/call, bench client %.0f us/call"
      % (o["rate"], r["server_cpu_us_per_op"], r["bench_cpu_us_per_op"]))'
while read -r p t; do
    used=$((t - ${BEFORE[$p]:-0}))
    [ "$used" -gt 0 ] || continue
    echo "$used $p $(grep "^$p|" "$NAMES" | tail -n 1 | cut -d'|' -f2-)"
done < <(snapshot) | sort -rn | awk -v calls="$CALLS" -v hz="$TICKS" '
    { us = $1 * 1e6 / hz / calls; total += us; $1 = ""; printf "%8.1f us/call %s\n", us, $0 }
    END { printf "%8.1f us/call Postgres in all (%d calls)\n", total, calls }'
