#!/usr/bin/env bash
# Callback delivery on one release replica and a fresh database, with local
# receivers run by cart-bench itself:
#   1. instant receiver, confirmations as fast as they go: delivered/s vs
#      the confirmation rate of the same run;
#   2. instant receiver, 200 confirmations/s: confirm-to-callback p99;
#   3. receiver taking 100 ms: delivered/s;
#   4. isolation: tenant a's receiver hangs on 200 callbacks, tenant b
#      confirms 50 carts at 20/s: b's confirm-to-callback p99;
#   5. outage: the receiver answers 503 for 60 s while 6,000 carts are
#      confirmed (100/s), then 200: deliveries per webhook-id, drain rate.
# The replica runs with CART_CALLBACK_BACKOFF=1s,5s,10s,30s,1m,2m,5m so the
# outage's retries fall due within minutes (the default waits 5 min, then
# 30 min); everything else is default. Results are appended as JSON lines
# to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER, PORT (30181), OUT
# (target/bench/callbacks.jsonl), STEPS ("instant paced slow isolation outage").
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
PORT=${PORT:-30181}
OUT=${OUT:-target/bench/callbacks.jsonl}
STEPS=${STEPS:-instant paced slow isolation outage}
DB=cart_bench_callbacks
mkdir -p "$(dirname "$OUT")" target/bench

cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
A=http://127.0.0.1:$PORT
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT

dropdb --if-exists "$DB"
createdb "$DB"
ulimit -n 65536 2>/dev/null || true
DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
    CART_API_KEYS=a:bench-key-a,b:bench-key-b CART_CALLBACK_SECRETS=a:secret-a,b:secret-b \
    CART_CALLBACK_BACKOFF=1s,5s,10s,30s,1m,2m,5m RUST_LOG=warn \
    "$BIN/cart-service" >>target/bench/callbacks-server.log 2>&1 &
PID=$!
"$BIN/cart-bench" --scenario ready --addr "$A" --server-pid "$PID" | sed '/^JSON/d'
bench() { "$BIN/cart-bench" --addr "$A" --api-key bench-key-a --server-pid "$PID" --json "$OUT" "$@" | sed '/^JSON/d'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

for step in $STEPS; do
    echo "== $step (load $(load))"
    case $step in
        instant) bench --scenario callbacks --callbacks 4000 --concurrency 64 --label instant ;;
        paced) bench --scenario callbacks --callbacks 3000 --rate 200 --concurrency 32 --label paced-200 ;;
        slow) bench --scenario callbacks --callbacks 4000 --receiver-delay 100ms --concurrency 64 --label slow-100ms ;;
        isolation) bench --scenario callback-isolation --api-key-b bench-key-b --hanging 200 --callbacks 50 --rate 20 --concurrency 16 --label isolation ;;
        outage) bench --scenario callback-outage --callbacks 6000 --outage 60s --concurrency 16 --label outage-60s ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
