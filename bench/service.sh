#!/usr/bin/env bash
# The service-only targets, on two replicas of the release server sharing a
# fresh database:
#   1. add-items peak (closed loop), then paced at 70% of it: mutation p99;
#   2. mixed (80/20) and lifecycle;
#   3. watch-latency: 1,000 watchers on the same replica, then on the other
#      replica, while add-items runs at half its peak;
#   4. watchers: 10,000 open WatchCart streams, server RSS, GetCart p99 idle
#      vs with the streams open.
# Results are appended as JSON lines to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER, CONCURRENCY (64), DURATION (10),
# CARTS (1000), WATCHERS (1000), STREAMS (10000), PORT_A (30171),
# PORT_B (30172), OUT (target/bench/service.jsonl), STEPS ("peak mixed
# lifecycle watch watchers").
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
CARTS=${CARTS:-1000}
WATCHERS=${WATCHERS:-1000}
STREAMS=${STREAMS:-10000}
PORT_A=${PORT_A:-30171}
PORT_B=${PORT_B:-30172}
OUT=${OUT:-target/bench/service.jsonl}
STEPS=${STEPS:-peak mixed lifecycle watch watchers}
DB=cart_bench_svc
mkdir -p "$(dirname "$OUT")" target/bench

cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
A=http://127.0.0.1:$PORT_A
B=http://127.0.0.1:$PORT_B
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
bench() { "$BIN/cart-bench" --no-seed --carts "$CARTS" --json "$OUT" "$@"; }
rate_of() { python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("JSON "):
        d=json.loads(l[5:]); print(round(sum(v["rate"] for v in d["result"]["ops"].values())))'; }

dropdb --if-exists "$DB"
createdb "$DB"
ulimit -n 65536 2>/dev/null || true
for port in "$PORT_A" "$PORT_B"; do
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$port" CART_METRICS_ADDR=127.0.0.1:0 \
        RUST_LOG=warn "$BIN/cart-service" >>target/bench/service-server.log 2>&1 &
    PIDS+=($!)
    "$BIN/cart-bench" --scenario ready --addr "http://127.0.0.1:$port" --server-pid "$!" --json "$OUT" --label "start $port" | sed '/^JSON/d'
done
PID_A=${PIDS[0]}
"$BIN/cart-bench" --scenario seed --addr "$A" --carts "$CARTS" --concurrency 32 | sed '/^JSON/d'
echo "== idle RSS after seeding: replica A $(awk '/VmRSS/ {print $2, $3}' /proc/$PID_A/status); load $(load)"

PEAK=
peak() {
    if [ -z "$PEAK" ]; then
        PEAK=$(bench --scenario add-items --addr "$A" --concurrency "$CONCURRENCY" --duration "${DURATION}s" \
            --server-pid "$PID_A" --label peak | tee -a /dev/stderr | rate_of)
        echo "== add-items peak ${PEAK}/s at $CONCURRENCY clients (load $(load))"
    fi
}

for step in $STEPS; do
    case $step in
    peak)
        peak
        R70=$((PEAK * 7 / 10))
        bench --scenario add-items --addr "$A" --concurrency "$CONCURRENCY" --rate "$R70" --duration "${DURATION}s" \
            --server-pid "$PID_A" --label "70% of peak" | sed '/^JSON/d'
        echo "== above: add-items paced at ${R70}/s = 70% of ${PEAK}/s (load $(load))"
        ;;
    mixed | lifecycle)
        bench --scenario "$step" --addr "$A" --concurrency "$CONCURRENCY" --duration "${DURATION}s" \
            --server-pid "$PID_A" --label "$step" | sed '/^JSON/d'
        ;;
    watch)
        peak
        HALF=$((PEAK / 2))
        bench --scenario watch-latency --addr "$A" --watchers "$WATCHERS" --concurrency "$CONCURRENCY" \
            --rate "$HALF" --duration "${DURATION}s" --server-pid "$PID_A" --label "watch same replica" | sed '/^JSON/d'
        echo "== above: $WATCHERS watchers on the writing replica, add-items at ${HALF}/s (load $(load))"
        bench --scenario watch-latency --addr "$A" --watch-addr "$B" --watchers "$WATCHERS" --concurrency "$CONCURRENCY" \
            --rate "$HALF" --duration "${DURATION}s" --server-pid "$PID_A" --label "watch other replica" | sed '/^JSON/d'
        echo "== above: $WATCHERS watchers on the other replica, add-items at ${HALF}/s (load $(load))"
        ;;
    watchers)
        bench --scenario watchers --addr "$A" --watchers "$STREAMS" --concurrency "$CONCURRENCY" \
            --duration "${DURATION}s" --server-pid "$PID_A" --label "watchers $STREAMS" | sed '/^JSON/d'
        echo "== above: $STREAMS open streams (load $(load))"
        ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
