#!/usr/bin/env python3
"""Markdown tables from the JSON lines of ceiling.sh / service.sh (default target/bench/*.jsonl)."""
import json
import sys

paths = sys.argv[1:] or ["target/bench/ceiling.jsonl", "target/bench/service.jsonl"]
rows = []
for p in paths:
    try:
        with open(p) as f:
            rows += [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        pass

print("| scenario | label | clients | rate | op | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU us/op | load after |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for d in rows:
    if "scenario" not in d:
        continue
    r = d["result"]
    groups = []
    if "ops" in r:
        groups.append(("", r))
    for k in ("idle", "loaded"):
        if k in r:
            groups.append((k, r[k]))
    if "result" in r:
        groups.append(("", r["result"]))
    for g, res in groups:
        for op, v in res.get("ops", {}).items():
            print(f"| {d['scenario']} | {d['label']} {g} | {d['concurrency']} | {d['rate'] or '-'} | {op} | {v['rate']:.0f} | "
                  f"{v['p50_ms']:.2f} | {v['p90_ms']:.2f} | {v['p99_ms']:.2f} | {v['p999_ms']:.2f} | "
                  f"{round(r['server_cpu_us_per_op']) if r.get('server_cpu_us_per_op') else '-'} | {d['loadavg_after']} |")
print()
print("| kind | script | clients | pgbench tps | service ops/s | ratio | load |")
print("|---|---|---|---|---|---|---|")
for d in rows:
    if d.get("kind"):
        print(f"| {d['kind']} | {d['script']} | {d['clients']} | {d['tps']:.0f} | {d.get('service', '-')} | {d.get('ratio', '-')} | {d['load']} |")
