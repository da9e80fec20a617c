#!/usr/bin/env bash
# Before/after of the socket ring (issue 11): BASE=old binary, NEW=this build; same harness.
# Usage: BASE=/path/to/old/shardcast perf/ring-before-after.sh
# before/after: base binary vs new, same harness (new), server CPU 0, load CPU 1
cd "$(dirname "$0")/.."
BENCH=target/release/shardcast-bench
run() { # label bin port
  d=$(mktemp -d); SHARDCAST_AUTH__ALLOW_ANONYMOUS=true taskset -c 0 $2 serve --listen 127.0.0.1:$3 --shards 1 --data-dir $d >/dev/null 2>&1 & pid=$!
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$3) 2>/dev/null && break; sleep 0.1; done
  for rate in ${RATES:-1000 3000 4500 0}; do
    echo -n "$1 rate=$rate: "; taskset -c 1 $BENCH fanout --url ws://127.0.0.1:$3/socket --cpus 1 --server-pid $pid --connections 1000 --payload 64 --rate $rate --duration ${DUR:-4} 2>&1 | grep "^fanout" | sed 's/  */ /g' | cut -d' ' -f3-
    curl -s http://127.0.0.1:$3/metrics | grep -E "^shardcast_(frames_out|write_syscalls|write_submissions|ring_wakeups)\{" | tr '\n' ' '; echo
  done
  echo -n "$1 echo: "; taskset -c 1 $BENCH echo --url ws://127.0.0.1:$3/socket --cpus 1 --server-pid $pid --connections 100 --payload 32 --duration ${DUR:-4} 2>&1 | grep "^echo" | sed 's/  */ /g' | cut -d' ' -f2-
  kill $pid; wait $pid 2>/dev/null
}
run base "${BASE:?set BASE to the old binary}" 21101
run ring target/release/shardcast 21102
