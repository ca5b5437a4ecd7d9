#!/usr/bin/env bash
# The service against the floor of its stack (issue 14), back to back in one
# run: src/bin/cart-floor/ serves GetCart and AddItems with the service's
# own statements and nothing around them, and GetCart of `echo` without the
# database (gRPC alone). Both run on the same fresh database, seeded through
# the service; for each concurrency, each scenario runs on the floor then on
# the service, with server CPU per call (from /proc of the server measured).
#
#   bench/floor.sh                          # 16 and 64 clients, 10 s each
#   CONCURRENCY="64" DURATION=20 bench/floor.sh
#
# Environment: PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres), DURATION (10),
# WARMUP (2), CARTS (1000), CONCURRENCY ("16 64"), PORT_SERVICE (30171),
# PORT_FLOOR (30172), OUT (target/bench/floor.jsonl), BIN (target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CARTS=${CARTS:-1000}
CONCURRENCY=${CONCURRENCY:-16 64}
PORT_SERVICE=${PORT_SERVICE:-30171}
PORT_FLOOR=${PORT_FLOOR:-30172}
OUT=${OUT:-target/bench/floor.jsonl}
BIN=${BIN:-target/release}
DB=cart_bench_floor
mkdir -p "$(dirname "$OUT")" target/bench
[ "$BIN" = target/release ] && [ -z "${NO_BUILD:-}" ] && cargo build --release --bin cart-service --bin cart-floor --bin cart-bench

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"

dropdb --if-exists "$DB"
createdb "$DB"
DATABASE_URL="$URL" CART_LISTEN_ADDR="127.0.0.1:$PORT_SERVICE" CART_METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn \
    "$BIN/cart-service" >>target/bench/floor-server.log 2>&1 &
SERVICE=$!
PIDS+=("$SERVICE")
"$BIN/cart-bench" --scenario ready --addr "http://127.0.0.1:$PORT_SERVICE" >/dev/null
"$BIN/cart-bench" --scenario seed --addr "http://127.0.0.1:$PORT_SERVICE" --carts "$CARTS" --concurrency 32 >/dev/null 2>&1
psql -q -d "$DB" -c "VACUUM ANALYZE"
DATABASE_URL="$URL" "$BIN/cart-floor" --listen "127.0.0.1:$PORT_FLOOR" >>target/bench/floor-server.log 2>&1 &
FLOOR=$!
PIDS+=("$FLOOR")
sleep 1
IDS=target/bench/floor-ids.txt
psql -Atd "$DB" -c "SELECT id FROM carts WHERE status = 'ACTIVE'" >"$IDS"
echo echo >target/bench/floor-echo.txt
echo "== $(nproc) cores; $CARTS carts; load $(load)"

figures() { # json -> "rate cpu p99"
    python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; o=list(r["ops"].values())[0]; print(round(o["rate"]), round(r.get("server_cpu_us_per_op") or 0), o["p99_ms"])'
}

run() { # label port pid scenario clients ids
    "$BIN/cart-bench" --scenario "$4" --addr "http://127.0.0.1:$2" --cart-ids "$6" --concurrency "$5" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --server-pid "$3" --json "$OUT" --label "floor $1" |
        sed -n 's/^JSON //p' | figures
}

for c in $CONCURRENCY; do
    read -r rate cpu p99 < <(run echo "$PORT_FLOOR" "$FLOOR" get-cart "$c" target/bench/floor-echo.txt)
    echo "RESULT echo (gRPC alone) c=$c: ${rate}/s, server CPU ${cpu} us/call, p99 ${p99} ms (load $(load))"
    for s in get-cart add-items; do
        read -r f_rate f_cpu f_p99 < <(run floor "$PORT_FLOOR" "$FLOOR" "$s" "$c" "$IDS")
        read -r s_rate s_cpu s_p99 < <(run service "$PORT_SERVICE" "$SERVICE" "$s" "$c" "$IDS")
        echo "RESULT $s c=$c: floor ${f_rate}/s ${f_cpu} us/call p99 ${f_p99} ms; service ${s_rate}/s ${s_cpu} us/call p99 ${s_p99} ms;" \
            "throughput $(python3 -c "print(f'{$s_rate/$f_rate:.2f}')")x, CPU per call $(python3 -c "print(f'{$s_cpu/max($f_cpu,1):.2f}')")x of the floor (load $(load))"
    done
done
