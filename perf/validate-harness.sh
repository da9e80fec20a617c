#!/usr/bin/env bash
# Cross-checks shardcast-bench against an independently written load generator
# (tools/loadgen/wsfan.c: plain C, epoll, no shared code) on the same server, same workload:
# 1,000 subscribers in one topic, one publisher, ~64-byte Phoenix V2 text frames.
# Server on CPU 0 (one shard), load on CPU 1.
#
#   perf/validate-harness.sh [SERVER_BIN]     (default target/release/shardcast)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER="${1:-target/release/shardcast}"
DUR="${DUR:-6}"
RATES="${RATES:-1000 2000 3000}"
cc -O2 -o target/wsfan tools/loadgen/wsfan.c
cargo build --release --quiet --bin shardcast-bench
port=21300
for rate in $RATES; do
  for tool in wsfan bench; do
    port=$((port + 1))
    data=$(mktemp -d)
    SHARDCAST_AUTH__ALLOW_ANONYMOUS=true taskset -c 0 "$SERVER" serve --listen "127.0.0.1:$port" --shards 1 \
      --data-dir "$data" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    case $tool in
      wsfan) taskset -c 1 target/wsfan 127.0.0.1 "$port" 1000 "$rate" "$DUR" ;;
      bench) taskset -c 1 target/release/shardcast-bench fanout --url "ws://127.0.0.1:$port/socket" --cpus 1 \
               --server-pid "$pid" --connections 1000 --payload 64 --rate "$rate" --duration "$DUR" | grep -E '^fanout|HARNESS' ;;
    esac
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
  done
done
