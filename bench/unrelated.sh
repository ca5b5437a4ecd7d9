#!/usr/bin/env bash
# Watch delivery with and without an unrelated long transaction (issue 13),
# in one run: two release replicas over one fresh database (A serves the
# writes, watchers follow A itself or B), add-items at half its measured
# peak, WATCHERS WatchCart streams (10 per cart). Each placement runs twice,
# back to back: without, then with a psql session that wrote a row of its
# own table and holds its transaction open for the whole run. Reports the
# watch commit-to-receipt p99 of both and their ratio.
#
#   bench/unrelated.sh                      # 1,000 watchers, 60 s runs
#   DURATION=20 WATCHERS=200 bench/unrelated.sh
#
# Environment: PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres), DURATION (60),
# WATCHERS (1000), CARTS (WATCHERS / 10: ten watchers a cart), PORT_A (30161), PORT_B (30162), OUT
# (target/bench/unrelated.jsonl), BIN (target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DURATION=${DURATION:-60}
WATCHERS=${WATCHERS:-1000}
PORT_A=${PORT_A:-30161}
PORT_B=${PORT_B:-30162}
OUT=${OUT:-target/bench/unrelated.jsonl}
BIN=${BIN:-target/release}
DB=cart_bench_unrelated
CARTS=${CARTS:-$((WATCHERS / 10))}
mkdir -p "$(dirname "$OUT")" target/bench
[ "$BIN" = target/release ] && cargo build --release --bin cart-service --bin cart-bench

PIDS=()
HOLDER=
cleanup() {
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

dropdb --if-exists "$DB"
createdb "$DB"
psql -q -d "$DB" -c "CREATE TABLE batch_job (n int)"
for port in "$PORT_A" "$PORT_B"; do
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$port" \
        CART_METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn "$BIN/cart-service" >>target/bench/unrelated-server.log 2>&1 &
    PIDS+=($!)
    "$BIN/cart-bench" --scenario ready --addr "http://127.0.0.1:$port" >/dev/null
done
A="http://127.0.0.1:$PORT_A"
"$BIN/cart-bench" --scenario seed --addr "$A" --carts "$CARTS" --concurrency 16 >/dev/null 2>&1
# Statistics as autovacuum would soon have them: on a fresh database
# without any, add-items ran at 0.13x (measured; see BENCHMARKS.md).
psql -q -d "$DB" -c "VACUUM ANALYZE"

peak=$("$BIN/cart-bench" --scenario add-items --addr "$A" --no-seed --carts "$CARTS" --concurrency 64 \
    --duration 10s --server-pid "${PIDS[0]}" | sed -n 's/^JSON //p' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["ops"]["add-items"]["rate"])')
half=$(python3 -c "print(round($peak / 2))")
echo "== add-items peak ${peak}/s at 64 clients; runs at ${half}/s; $WATCHERS watchers on $CARTS carts; load $(load)"

# watch-latency nests its figures one level deeper than the load scenarios.
p99_of() { python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; d=r.get("result", r)["ops"]; print(d.get(sys.argv[1], {}).get("p99_ms", "n/a"))' "$1"; }

for where in same other; do
    watch_addr=$A
    [ "$where" = other ] && watch_addr="http://127.0.0.1:$PORT_B"
    declare -A P99=()
    for tx in none held; do
        if [ "$tx" = held ]; then
            # One transaction: its row is written at once, then it stays open.
            psql -q -d "$DB" -c "BEGIN; INSERT INTO batch_job VALUES (1); SELECT pg_sleep($((DURATION + 30))); COMMIT;" >/dev/null 2>&1 &
            HOLDER=$!
            sleep 1
        fi
        json=$("$BIN/cart-bench" --scenario watch-latency --addr "$A" --watch-addr "$watch_addr" --no-seed \
            --carts "$CARTS" --watchers "$WATCHERS" --rate "$half" --concurrency 64 --duration "${DURATION}s" \
            --server-pid "${PIDS[0]}" --json "$OUT" --label "unrelated $where $tx" | sed -n 's/^JSON //p')
        if [ -n "$HOLDER" ]; then
            open=$(psql -Atd "$DB" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'BEGIN; INSERT INTO batch_job%'")
            kill "$HOLDER" 2>/dev/null || true
            psql -q -d "$DB" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'BEGIN; INSERT INTO batch_job%'" >/dev/null
            wait "$HOLDER" 2>/dev/null || true
            HOLDER=
            echo "   (the unrelated transaction was still open at the end of the run: $open session)"
            # What it kept from cleanup goes now, not in the next run.
            psql -q -d "$DB" -c "VACUUM"
        fi
        P99[$tx]=$(echo "$json" | p99_of watch-event)
        echo "RESULT $where replica, unrelated transaction $tx: watch p99 ${P99[$tx]} ms, add-items p99 $(echo "$json" | p99_of add-items) ms (load $(load))"
    done
    echo "RESULT $where replica: watch p99 with / without = $(python3 -c "print(f'{${P99[held]}/${P99[none]}:.2f}')")x (target <= 1.5x)"
done
