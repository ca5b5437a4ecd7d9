#!/usr/bin/env python3
"""One line per operation from cart-bench's JSON line(s) on stdin: label, rate, p50, p99, RSS, load."""
import json
import sys

label = sys.argv[1] if len(sys.argv) > 1 else ""
for line in sys.stdin:
    line = line.strip()
    if line.startswith("JSON "):
        line = line[5:]
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    r = d["result"]
    r = r.get("result", r)  # watch-latency nests its figures one level deeper
    for op, v in r.get("ops", {}).items():
        print(
            f"{label} c={d['concurrency']} {op:<12} {v['rate']:8.0f}/s p50 {v['p50_ms']:6.2f} "
            f"p99 {v['p99_ms']:6.2f} ms  cpu/op server {r.get('server_cpu_us_per_op') or 0:.0f} us client {r.get('bench_cpu_us_per_op') or 0:.0f} us  RSS {r.get('rss_kib_end')} KiB  load {d['loadavg_after']}"
        )
    for k, n in r.get("errors", {}).items():
        print(f"{label}   error {k}: {n}")
