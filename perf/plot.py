"""Latency against delivered rate for shardcast and the peer, from perf/run.sh's JSON files."""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
fig, ax = plt.subplots(figsize=(8, 5))
for name, color in (("shardcast", "tab:blue"), ("peer", "tab:orange")):
    points = []
    for path in glob.glob(os.path.join(out, f"fanout-{name}-*.json")) + glob.glob(os.path.join(out, f"search-{name}.json")):
        for r in json.load(open(path))["results"]:
            # Runs that lost messages (slow consumers dropped) are not comparable: left out.
            if r["latency"]["count"] and r["lost"] == 0:
                points.append((r["delivered_per_sec"] / 1e6, r["latency"]["p50_us"] / 1000, r["latency"]["p99_us"] / 1000))
    points.sort()
    if not points:
        continue
    xs = [p[0] for p in points]
    label = "shardcast" if name == "shardcast" else "tokio-tungstenite peer"
    ax.plot(xs, [p[2] for p in points], "o-", color=color, label=f"{label} p99")
    ax.plot(xs, [p[1] for p in points], "x--", color=color, alpha=0.6, label=f"{label} p50")
ax.axhline(10, color="grey", linestyle=":", label="10 ms bound")
ax.set_yscale("log")
ax.set_xlabel("delivered messages per second (millions), 1,000 subscribers, 64 B")
ax.set_ylabel("publish-to-delivery latency (ms, log)")
ax.set_title("Fan-out latency against load, server on one core")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "fanout-latency.png"), dpi=110)
print("wrote", os.path.join(out, "fanout-latency.png"))
