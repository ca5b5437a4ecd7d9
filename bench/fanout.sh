#!/usr/bin/env bash
# Watch fan-out (issue 14) on two release replicas over one fresh database:
# add-items is paced at half its measured peak through replica A, and
#   1. no watchers: add-items p99 (the reference);
#   2. WATCHERS WatchCart streams (ten a cart) on A itself: event p99,
#      add-items p99 against step 1;
#   3. the same streams on B: event p99 and B's CPU per delivered event (B
#      does nothing else, so its CPU is the cost of delivery: its share of
#      the feed's reads and every stream's encoding and sending).
# Results are appended as JSON lines to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER, WATCHERS (10000), CARTS (WATCHERS / 10),
# DURATION (20), CONCURRENCY (64), PORT_A (30197), PORT_B (30198), OUT
# (target/bench/fanout.jsonl), NO_BUILD (set: skip the cargo build), BIN (the
# folder of the binaries: target/release; an older build for an A/B), B_ENV
# (extra environment of replica B, e.g. TOKIO_WORKER_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
WATCHERS=${WATCHERS:-10000}
CARTS=${CARTS:-$((WATCHERS / 10))}
DURATION=${DURATION:-20}
CONCURRENCY=${CONCURRENCY:-64}
PORT_A=${PORT_A:-30197}
PORT_B=${PORT_B:-30198}
OUT=${OUT:-target/bench/fanout.jsonl}
DB=cart_bench_fanout
BIN=${BIN:-target/release}
mkdir -p "$(dirname "$OUT")" target/bench
[ -n "${NO_BUILD:-}" ] || cargo build --release --bin cart-service --bin cart-bench
ulimit -n 65536 2>/dev/null || true
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
A=http://127.0.0.1:$PORT_A
B=http://127.0.0.1:$PORT_B

dropdb --if-exists "$DB" 2>/dev/null
createdb "$DB"
for port in "$PORT_A" "$PORT_B"; do
    extra=
    [ "$port" = "$PORT_B" ] && extra=${B_ENV:-}
    # shellcheck disable=SC2086
    env $extra DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$port" CART_METRICS_ADDR=127.0.0.1:0 \
        CART_MAX_WATCHERS_PER_TENANT="$WATCHERS" RUST_LOG=warn "$BIN/cart-service" >>target/bench/fanout-server.log 2>&1 &
    PIDS+=($!)
    "$BIN/cart-bench" --scenario ready --addr "http://127.0.0.1:$port" >/dev/null
done
"$BIN/cart-bench" --scenario seed --addr "$A" --carts "$CARTS" --concurrency 32 | sed '/^JSON/d'
psql -q -d "$DB" -c "VACUUM ANALYZE"
common=(--no-seed --carts "$CARTS" --concurrency "$CONCURRENCY" --json "$OUT")
peak=$("$BIN/cart-bench" --scenario add-items --addr "$A" "${common[@]}" --duration 10s |
    sed -n 's/^JSON //p' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["ops"]["add-items"]["rate"])')
half=$(python3 -c "print(round($peak / 2))")
echo "== add-items peak ${peak}/s; paced at ${half}/s; $WATCHERS watchers on $CARTS carts (load $(load))"

echo "== 1. no watchers"
"$BIN/cart-bench" --scenario add-items --addr "$A" "${common[@]}" --rate "$half" --duration "${DURATION}s" \
    --server-pid "${PIDS[0]}" --label "fanout none" | sed '/^JSON/d'
echo "== 2. $WATCHERS watchers on A, the writing replica (load $(load))"
"$BIN/cart-bench" --scenario watch-latency --addr "$A" "${common[@]}" --watchers "$WATCHERS" --rate "$half" \
    --duration "${DURATION}s" --server-pid "${PIDS[0]}" --label "fanout same" | sed '/^JSON/d'
echo "== 3. $WATCHERS watchers on B (load $(load))"
"$BIN/cart-bench" --scenario watch-latency --addr "$A" --watch-addr "$B" "${common[@]}" --watchers "$WATCHERS" \
    --rate "$half" --duration "${DURATION}s" --server-pid "${PIDS[0]}" --watch-server-pid "${PIDS[1]}" \
    --label "fanout other" | sed '/^JSON/d'
