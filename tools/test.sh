#!/usr/bin/env bash
# The whole test suite, as run by CI (.ci/run) and by a newcomer on a fresh Linux machine:
# installs what it needs, then lint, Rust unit/property/integration tests, the phoenix.js suite
# and the Autobahn|Testsuite conformance run.
#
#   tools/test.sh            everything
#   SKIP_AUTOBAHN=1 SKIP_FUZZ=1 tools/test.sh    (FUZZ_SECONDS=N: time per fuzz target, 15 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings

step "feature sets: the library builds with each family alone and with none"
cargo check --quiet -p shardcast --lib --no-default-features
for f in rooms documents bulk uploads; do
  cargo check --quiet -p shardcast --lib --no-default-features --features "$f"
done

step "Rust tests (unit, property, layering, integration over real sockets, doc examples)"
cargo build --quiet --bins
cargo test --all-targets
cargo test --quiet --doc -p shardcast

step "phoenix.js suite (official client, ws transport)"
(cd tests/js && npm ci --no-audit --no-fund --silent && SHARDCAST_BIN="$target/debug/shardcast" npm test)

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  secs="${FUZZ_SECONDS:-15}"
  step "fuzzing: every target under fuzz/ for ${secs} s (cargo-fuzz, nightly, AddressSanitizer)"
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
  (
    cd fuzz
    log=$(mktemp)
    for t in $(cargo +nightly fuzz list); do
      if ! cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $t failed: the input is under fuzz/artifacts/$t; make it a regression test"
        exit 1
      fi
      echo "$t: $(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" || grep -E '^Done' "$log")"
    done
  )
fi

py27="${AUTOBAHN_PYTHON:-${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python2.7}"
if [ "${SKIP_AUTOBAHN:-0}" != 1 ] && [ ! -x "$py27" ]; then
  step "Autobahn|Testsuite SKIPPED: it needs Python 2.7 (pyenv install 2.7.18, or set AUTOBAHN_PYTHON)"
elif [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
  step "Autobahn|Testsuite against the /echo endpoint"
  port=19001
  data=$(mktemp -d)
  SHARDCAST_WEBSOCKET__MAX_MESSAGE_SIZE=16777216 SHARDCAST_WEBSOCKET__MAX_FRAME_SIZE=16777216 \
    "$target/debug/shardcast" serve --echo-endpoint --listen "127.0.0.1:$port" --shards 1 --data-dir "$data" \
    2>"$data/server.log" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  status=0
  # permessage-deflate (12.*, 13.*): every negotiation variant, messages up to 16 KiB (about 100 s);
  # the larger sizes take 9 more minutes here: AUTOBAHN_FULL=1 runs them too.
  big='[]'
  if [ "${AUTOBAHN_FULL:-0}" != 1 ]; then
    big=$(python3 -c 'import json; print(json.dumps(["%s.*.%d" % (g, n) for g in (12, 13) for n in (8, 9, 10, 13, 14, 15, 16, 17, 18)]))')
  fi
  AUTOBAHN_EXCLUDE="$big" tools/autobahn/run.sh "ws://127.0.0.1:$port/echo" || status=$?
  kill "$server"
  wait "$server" || true
  trap - EXIT
  [ "$status" = 0 ] || { echo "Autobahn failed"; exit "$status"; }
fi
step "all tests passed"
