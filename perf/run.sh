#!/usr/bin/env bash
# Reproduces the figures in perf/README.md: shardcast and the tokio-tungstenite peer, one core
# each (server on CPU 0, load on CPU 1), driven by the same harness in the same run.
#
#   perf/run.sh [OUT_DIR]          (default perf/results/<date>)
#   QUICK=1 perf/run.sh            shorter runs
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-perf/results/$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
DUR="${DUR:-5}"; [ "${QUICK:-0}" = 1 ] && DUR=2
SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"

cargo build --release --quiet --bin shardcast --bin shardcast-bench
CARGO_TARGET_DIR="${PEER_TARGET:-target/peer}" cargo build --release --quiet --manifest-path perf/peers/tokio-tungstenite/Cargo.toml
PEER_BIN="${PEER_TARGET:-target/peer}/release/tokio-tungstenite-peer"
BENCH=target/release/shardcast-bench

start_server() { # name port -> sets PID
  case "$1" in
    shardcast) SHARDCAST_AUTH__ALLOW_ANONYMOUS=true taskset -c "$SERVER_CPU" target/release/shardcast serve --listen "127.0.0.1:$2" --shards 1 --data-dir "$(mktemp -d)" 2>>"$OUT/server-$1.log" & ;;
    peer) taskset -c "$SERVER_CPU" "$PEER_BIN" --listen "127.0.0.1:$2" --threads 1 2>>"$OUT/server-$1.log" & ;;
  esac
  PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "server $1 did not start" >&2; exit 1
}

bench() { # name port scenario args...
  local name=$1 port=$2 scenario=$3; shift 3
  taskset -c "$LOAD_CPU" "$BENCH" "$scenario" --url "ws://127.0.0.1:$port/socket" --cpus "$LOAD_CPU" \
    --server-pid "$PID" --label "$name" "$@"
}

{
  echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  port=24100
  for name in shardcast peer; do
    port=$((port + 1)); start_server "$name" "$port"
    for rate in 100 300 1000 2000 3000; do
      bench "$name" "$port" fanout --connections 1000 --payload 64 --rate "$rate" --duration "$DUR" --json "$OUT/fanout-$name-$rate.json"
    done
    bench "$name" "$port" fanout --connections 1000 --payload 64 --rate 0 --duration "$DUR" --json "$OUT/fanout-$name-saturation.json"
    bench "$name" "$port" fanout --connections 1000 --payload 64 --search --rate 200 --step-secs "$DUR" --p99-bound-ms 10 --json "$OUT/search-$name.json"
    bench "$name" "$port" echo --connections 100 --payload 32 --duration "$DUR" --json "$OUT/echo-$name.json"
    bench "$name" "$port" rooms --rooms 50 --members 20 --rate 5 --duration "$DUR" --json "$OUT/rooms-$name.json"
    kill "$PID"; wait "$PID" 2>/dev/null || true
  done
  port=$((port + 1)); start_server shardcast "$port"
  bench shardcast "$port" idle --connections 15000 --duration 4 --json "$OUT/idle-shardcast.json"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  port=$((port + 1)); start_server peer "$port"
  bench peer "$port" idle --connections 15000 --duration 4 --json "$OUT/idle-peer.json"
  kill "$PID"; wait "$PID" 2>/dev/null || true
} 2>&1 | tee "$OUT/run.log"

python3 -m venv target/plot-venv >/dev/null 2>&1 || true
target/plot-venv/bin/pip install --quiet matplotlib >/dev/null 2>&1 || true
target/plot-venv/bin/python perf/plot.py "$OUT" || echo "plot skipped (matplotlib unavailable)"
