#!/usr/bin/env bash
# Overload, fairness and deadlines (issue 12) on one release replica over a
# fresh database, two tenants (a, b):
#   peak:      add-items closed loop at $PEAK_CLIENTS (the reference);
#   overload:  add-items closed loop at $OVER_CLIENTS with $DEADLINE deadlines;
#              refused clients honour the server's RetryInfo (100 ms) with
#              exponential backoff (x1.6 per refusal in a row, at most 2 s,
#              jittered +-20%), as gRPC clients retry;
#   b-alone:   tenant b paced at $RATE_B/s with nobody else;
#   fairness:  tenant a as in overload while tenant b runs as in b-alone, each
#              in its own cart-bench process (its own runtime), so that b's
#              latency measures the server rather than a's load generator;
#   deadlines: a second replica whose Postgres is reached through a proxy
#              (cart-bench --scenario pg-proxy) that stops forwarding for
#              $STALL; $STALL_CLIENTS clients call with $STALL_DEADLINE
#              deadlines before, during and after: durations, outcomes, pool use.
# Results are appended as JSON lines to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER, STEPS (all five, in order), PEAK_CLIENTS
# (64), OVER_CLIENTS (640), DEADLINE (200ms), RATE_B (200), DURATION (10),
# CARTS (1000), PORT (30181; PORT+1..PORT+4 are used too), OUT
# (target/bench/overload.jsonl), SERVER_ENV (extra env for the servers),
# SERVER_BIN (target/release/cart-service), STALL (5s), STALL_CLIENTS (8),
# STALL_DEADLINE (100ms), DB (cart_bench_overload), NO_BUILD (set: skip the
# cargo build), OVER_ARGS (extra cart-bench arguments of the overload step,
# e.g. "--overload-backoff-max 1ms": retry at once, to measure refusals), LABEL,
# A_NICE (0; e.g. 19: tenant a's load generator yields the CPU to the server,
# Postgres and b, as if a's clients ran on other machines).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
STEPS=${STEPS:-peak overload b-alone fairness deadlines}
PEAK_CLIENTS=${PEAK_CLIENTS:-64}
OVER_CLIENTS=${OVER_CLIENTS:-640}
DEADLINE=${DEADLINE:-200ms}
RATE_B=${RATE_B:-200}
DURATION=${DURATION:-10}
CARTS=${CARTS:-1000}
PORT=${PORT:-30181}
OUT=${OUT:-target/bench/overload.jsonl}
STALL=${STALL:-5s}
STALL_CLIENTS=${STALL_CLIENTS:-8}
STALL_DEADLINE=${STALL_DEADLINE:-100ms}
DB=${DB:-cart_bench_overload}
A_NICE=${A_NICE:-0}
mkdir -p "$(dirname "$OUT")" target/bench

[ -n "${NO_BUILD:-}" ] || cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
SERVER_BIN=${SERVER_BIN:-$BIN/cart-service}
ADDR=http://127.0.0.1:$PORT
METRICS=127.0.0.1:$((PORT + 1))
dropdb --if-exists "$DB"
createdb "$DB"
ulimit -n 65536 2>/dev/null || true
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
has() { [[ " $STEPS " == *" $1 "* ]]; }

env ${SERVER_ENV:-} DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" \
    CART_METRICS_ADDR="$METRICS" CART_API_KEYS="a:bench-key-a,b:bench-key-b" RUST_LOG=warn \
    "$SERVER_BIN" >>target/bench/overload-server.log 2>&1 &
PID=$!
PIDS+=("$PID")
"$BIN/cart-bench" --scenario ready --addr "$ADDR" --server-pid "$PID" | sed '/^JSON/d'
common=(--addr "$ADDR" --json "$OUT" --carts "$CARTS")
D=(--duration "${DURATION}s")
"$BIN/cart-bench" --scenario seed "${common[@]}" --api-key bench-key-a --concurrency 32 | sed '/^JSON/d'
"$BIN/cart-bench" --scenario seed "${common[@]}" --api-key bench-key-b --concurrency 8 | sed '/^JSON/d'
A=(--api-key bench-key-a --no-seed)
B=(--api-key bench-key-b --no-seed --scenario add-items --rate "$RATE_B" --concurrency 8)

if has peak; then
    echo "== peak: add-items, $PEAK_CLIENTS clients (load $(load))"
    "$BIN/cart-bench" --scenario add-items "${common[@]}" "${D[@]}" --server-pid "$PID" "${A[@]}" \
        --concurrency "$PEAK_CLIENTS" --label peak | sed '/^JSON/d'
fi
if has overload; then
    echo "== overload: add-items, $OVER_CLIENTS clients, $DEADLINE deadlines (load $(load))"
    "$BIN/cart-bench" --scenario overload "${common[@]}" "${D[@]}" --server-pid "$PID" "${A[@]}" \
        --concurrency "$OVER_CLIENTS" --deadline "$DEADLINE" --label "${LABEL:-overload}" ${OVER_ARGS:-} | sed '/^JSON/d'
fi
if has b-alone; then
    echo "== fairness: tenant b alone at $RATE_B/s (load $(load))"
    "$BIN/cart-bench" "${common[@]}" "${D[@]}" "${B[@]}" --label "b alone" | sed '/^JSON/d'
fi
if has fairness; then
    echo "== fairness: tenant a at $OVER_CLIENTS clients (one process), tenant b at $RATE_B/s (another) (load $(load))"
    # A's measured window (2 s warm-up, DURATION+4 s) covers B's (starts 3 s
    # later, 2 s warm-up, DURATION s).
    nice -n "$A_NICE" "$BIN/cart-bench" --scenario overload "${common[@]}" "${A[@]}" --concurrency "$OVER_CLIENTS" \
        --deadline "$DEADLINE" --duration "$((DURATION + 4))s" --label "fairness a" >target/bench/overload-fairness-a.log &
    APID=$!
    sleep 3
    "$BIN/cart-bench" "${common[@]}" "${D[@]}" "${B[@]}" --label "fairness b" | sed '/^JSON/d'
    wait "$APID"
    sed '/^JSON/d' target/bench/overload-fairness-a.log
    curl -s "http://$METRICS/metrics" | grep -E '^cart_shed_calls_total' || true
fi

if has deadlines; then
    PROXY_PORT=$((PORT + 2))
    "$BIN/cart-bench" --scenario pg-proxy --proxy-listen "127.0.0.1:$PROXY_PORT" --proxy-upstream "$PGHOST:$PGPORT" \
        >>target/bench/overload-proxy.log 2>&1 &
    PROXY=$!
    PIDS+=("$PROXY")
    sleep 0.5
    ADDR2=http://127.0.0.1:$((PORT + 3))
    METRICS2=127.0.0.1:$((PORT + 4))
    env ${SERVER_ENV:-} DATABASE_URL="postgres://$PGUSER@127.0.0.1:$PROXY_PORT/$DB" \
        CART_LISTEN_ADDR="127.0.0.1:$((PORT + 3))" CART_METRICS_ADDR="$METRICS2" \
        CART_API_KEYS="a:bench-key-a,b:bench-key-b" RUST_LOG=warn \
        "$SERVER_BIN" >>target/bench/overload-server2.log 2>&1 &
    PID2=$!
    PIDS+=("$PID2")
    "$BIN/cart-bench" --scenario ready --addr "$ADDR2" | sed '/^JSON/d'
    echo "== deadlines: $STALL_CLIENTS clients, $STALL_DEADLINE deadlines, Postgres stalled for $STALL (load $(load))"
    "$BIN/cart-bench" --scenario deadlines --addr "$ADDR2" --json "$OUT" --carts "$CARTS" "${A[@]}" \
        --concurrency "$STALL_CLIENTS" --deadline "$STALL_DEADLINE" --warmup 3s --duration "$STALL" --after 5s \
        --proxy-pid "$PROXY" --metrics-addr "$METRICS2" --label deadlines | sed '/^JSON/d'
fi
curl -s "http://$METRICS/metrics" | grep -E '^cart_shed_calls_total' || true
