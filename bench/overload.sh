#!/usr/bin/env bash
# Overload and fairness (issue 12) on one release replica over a fresh
# database, two tenants (a, b):
#   1. peak: add-items closed loop at $PEAK_CLIENTS (the reference);
#   2. overload: add-items closed loop at $OVER_CLIENTS with $DEADLINE
#      deadlines (clients back off 50 ms after RESOURCE_EXHAUSTED);
#   3. fairness alone: tenant b paced at $RATE_B/s with nobody else;
#   4. fairness: tenant a as in 2 while tenant b runs as in 3.
# Results are appended as JSON lines to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER, PEAK_CLIENTS (64), OVER_CLIENTS (640),
# DEADLINE (200ms), RATE_B (200), DURATION (10), CARTS (1000), PORT (30181),
# OUT (target/bench/overload.jsonl), SERVER_ENV (extra env for the server).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
PEAK_CLIENTS=${PEAK_CLIENTS:-64}
OVER_CLIENTS=${OVER_CLIENTS:-640}
DEADLINE=${DEADLINE:-200ms}
RATE_B=${RATE_B:-200}
DURATION=${DURATION:-10}
CARTS=${CARTS:-1000}
PORT=${PORT:-30181}
OUT=${OUT:-target/bench/overload.jsonl}
DB=cart_bench_overload
mkdir -p "$(dirname "$OUT")"

cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
ADDR=http://127.0.0.1:$PORT
dropdb --if-exists "$DB"
createdb "$DB"
ulimit -n 65536 2>/dev/null || true
env ${SERVER_ENV:-} DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" \
    CART_METRICS_ADDR=127.0.0.1:0 CART_API_KEYS="a:bench-key-a,b:bench-key-b" RUST_LOG=warn \
    "$BIN/cart-service" >>target/bench/overload-server.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
"$BIN/cart-bench" --scenario ready --addr "$ADDR" --server-pid "$PID" | sed '/^JSON/d'
common=(--addr "$ADDR" --server-pid "$PID" --json "$OUT" --carts "$CARTS" --duration "${DURATION}s")
"$BIN/cart-bench" --scenario seed "${common[@]}" --api-key bench-key-a --concurrency 32 | sed '/^JSON/d'
A=(--api-key bench-key-a --no-seed)

echo "== 1. peak: add-items, $PEAK_CLIENTS clients (load $(cut -d' ' -f1-3 /proc/loadavg))"
"$BIN/cart-bench" --scenario add-items "${common[@]}" "${A[@]}" --concurrency "$PEAK_CLIENTS" --label peak | sed '/^JSON/d'
echo "== 2. overload: add-items, $OVER_CLIENTS clients, $DEADLINE deadlines"
"$BIN/cart-bench" --scenario overload "${common[@]}" "${A[@]}" --concurrency "$OVER_CLIENTS" --deadline "$DEADLINE" --label overload | sed '/^JSON/d'
echo "== 3. fairness: tenant b alone at $RATE_B/s"
"$BIN/cart-bench" --scenario fairness "${common[@]}" "${A[@]}" --api-key-b bench-key-b --concurrency 0 --rate-b "$RATE_B" --label "b alone" | sed '/^JSON/d'
echo "== 4. fairness: tenant a at $OVER_CLIENTS clients, tenant b at $RATE_B/s"
"$BIN/cart-bench" --scenario fairness "${common[@]}" "${A[@]}" --api-key-b bench-key-b --concurrency "$OVER_CLIENTS" --deadline "$DEADLINE" --rate-b "$RATE_B" --label "a overload, b" | sed '/^JSON/d'
curl -s "http://127.0.0.1:$(ss -ltnp 2>/dev/null | awk -v pid="pid=$PID," '$0 ~ pid && $4 !~ /:'"$PORT"'$/ {split($4,a,":"); print a[length(a)]; exit}')/metrics" 2>/dev/null | grep -E '^cart_shed_calls_total' || true
