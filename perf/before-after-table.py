#!/usr/bin/env python3
"""Summarizes a perf/before-after.sh result directory as a Markdown table (median of the runs,
and every run's value in brackets)."""
import glob, json, os, re, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else "."
rows = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    m = re.match(r"(before|after)-(.+)-r(\d+)\.json", os.path.basename(path))
    if not m:
        continue
    side, case, _ = m.groups()
    r = json.load(open(path))["results"][0]
    rows.setdefault(case, {}).setdefault(side, []).append(r)

def fmt(vals, f):
    return f"{f(statistics.median(vals))} [{', '.join(f(v) for v in vals)}]"

print("| case | side | delivered/s | p50 ms | p99 ms | server CPU % | harness CPU % |")
print("|---|---|---:|---:|---:|---:|---:|")
order = lambda c: (c.startswith("echo"), int(re.sub(r"\D", "", c) or 0))
for case in sorted(rows, key=order):
    for side in ("before", "after"):
        rs = rows[case].get(side, [])
        if not rs:
            continue
        ms = lambda k: [x["latency"][k] / 1000 for x in rs]
        print(f"| {case} | {side} | {fmt([x['delivered_per_sec'] for x in rs], lambda v: f'{v:,.0f}')} "
              f"| {fmt(ms('p50_us'), lambda v: f'{v:.1f}')} | {fmt(ms('p99_us'), lambda v: f'{v:.1f}')} "
              f"| {fmt([x['server_cpu_percent'] for x in rs], lambda v: f'{v:.0f}')} "
              f"| {fmt([x['harness_cpu_percent'] for x in rs], lambda v: f'{v:.0f}')} |")
