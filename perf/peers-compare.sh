#!/usr/bin/env bash
# shardcast against the benchmark peers, same harness, same machine: server on CPU 0 (one shard /
# one thread), harness on CPU 1. RUNS runs per point, alternating servers; RATES in messages/s
# to 1,000 subscribers (0 = saturation), then echo.
# Peers: build them first (see perf/peers/README.md), or set TT=/FW= to their binaries.
cd "$(dirname "$0")/.."
BENCH=target/release/shardcast-bench
TT=${TT:-/tmp/target-peer/release/tokio-tungstenite-peer}
FW=${FW:-perf/peers/fastwebsockets/target/release/fastwebsockets-peer}
start() { # name port
  case $1 in
    shardcast) d=$(mktemp -d); SHARDCAST_AUTH__ALLOW_ANONYMOUS=true taskset -c 0 target/release/shardcast serve --listen 127.0.0.1:$2 --shards 1 --data-dir $d >/dev/null 2>&1 & ;;
    tokio-tungstenite) taskset -c 0 $TT --listen 127.0.0.1:$2 --threads 1 >/dev/null 2>&1 & ;;
    fastwebsockets) taskset -c 0 $FW --listen 127.0.0.1:$2 --threads 1 >/dev/null 2>&1 & ;;
  esac
  pid=$!
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null && break; sleep 0.1; done
}
port=21500
for run in $(seq ${RUNS:-1}); do
  for server in shardcast tokio-tungstenite fastwebsockets; do
    port=$((port+1)); start $server $port
    for rate in ${RATES:-100 1000 0}; do
      echo -n "run=$run $server fanout rate=$rate: "
      taskset -c 1 $BENCH fanout --url ws://127.0.0.1:$port/socket --cpus 1 --server-pid $pid --connections 1000 --payload 64 --rate $rate --duration ${DUR:-4} 2>&1 | grep -E "^fanout|HARNESS" | sed 's/  */ /g' | cut -d' ' -f6- | tr '\n' ' '; echo
    done
    echo -n "run=$run $server echo: "
    taskset -c 1 $BENCH echo --url ws://127.0.0.1:$port/socket --cpus 1 --server-pid $pid --connections 100 --payload 32 --duration ${DUR:-4} 2>&1 | grep -E "^echo|HARNESS" | sed 's/  */ /g' | cut -d' ' -f6- | tr '\n' ' '; echo
    kill $pid; wait $pid 2>/dev/null
  done
done
