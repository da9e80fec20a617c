#!/usr/bin/env bash
# Before/after check for a refactor: the server built from two commits, driven by the same
# harness (this checkout's), one core each (server on CPU 0, harness on CPU 1), runs alternated
# so drift on the machine hits both alike.
#
#   perf/before-after.sh BEFORE_COMMIT [OUT_DIR]     (AFTER = this checkout)
#   RUNS=3 DUR=4 perf/before-after.sh 0b16281 perf/results/2026-12-01-channel-core
#   RATES="100 300" ECHO=0 ...      other fan-out rates (publishes/s to 1,000 subscribers), no echo
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE="${1:?usage: perf/before-after.sh BEFORE_COMMIT [OUT_DIR]}"
OUT="${2:-perf/results/$(date -u +%Y-%m-%d)-before-after}"
RUNS="${RUNS:-3}"; DUR="${DUR:-4}"; RATES="${RATES:-1000 3000}"; ECHO="${ECHO:-1}"
SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
mkdir -p "$OUT"

cargo build --release --quiet --bin shardcast --bin shardcast-bench
work=$(mktemp -d)
git worktree add --quiet --detach "$work/before" "$BEFORE"
trap 'git worktree remove --force "$work/before"; rm -rf "$work"' EXIT
CARGO_TARGET_DIR="${BEFORE_TARGET:-/tmp/target-before}" cargo build --release --quiet \
  --manifest-path "$work/before/Cargo.toml" --bin shardcast
declare -A BIN=([before]="${BEFORE_TARGET:-/tmp/target-before}/release/shardcast" [after]=target/release/shardcast)
BENCH=target/release/shardcast-bench

start() { # name port
  SHARDCAST_AUTH__ALLOW_ANONYMOUS=true taskset -c "$SERVER_CPU" "${BIN[$1]}" serve --listen "127.0.0.1:$2" \
    --shards 1 --data-dir "$(mktemp -d)" 2>>"$OUT/server-$1.log" &
  PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "server $1 did not start" >&2; exit 1
}

bench() { # label port scenario args...
  local label=$1 port=$2 scenario=$3; shift 3
  taskset -c "$LOAD_CPU" "$BENCH" "$scenario" --url "ws://127.0.0.1:$port/socket" --cpus "$LOAD_CPU" \
    --server-pid "$PID" --label "$label" --duration "$DUR" --json "$OUT/$label.json" "$@"
}

{
  echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "# before = $(git rev-parse --short "$BEFORE"), after = $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  port=24300
  for run in $(seq "$RUNS"); do
    for name in before after; do
      port=$((port + 1)); start "$name" "$port"
      for rate in $RATES; do
        bench "$name-fanout-${rate}-r$run" "$port" fanout --connections 1000 --payload 64 --rate "$rate"
      done
      [ "$ECHO" = 1 ] && bench "$name-echo-r$run" "$port" echo --connections 100 --payload 32
      kill "$PID"; wait "$PID" 2>/dev/null || true
    done
  done
} 2>&1 | tee "$OUT/run.log"
