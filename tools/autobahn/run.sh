#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client (wstest) against a WebSocket echo
# endpoint and judge the result with summarize.py.
#
# Usage: tools/autobahn/run.sh [URL]        (default ws://127.0.0.1:9001/echo)
#
# Environment:
#   AUTOBAHN_VENV     py2.7 virtualenv to create/reuse
#                     (default $HOME/.cache/shardcast-autobahn-venv)
#   AUTOBAHN_OUT      report directory (default <repo>/target/autobahn)
#   AUTOBAHN_PYTHON   Python 2.7 interpreter (default $PYENV_ROOT/versions/2.7.18/bin/python2.7)
#   AUTOBAHN_AGENT    agent name used in the report (default shardcast)
#   AUTOBAHN_CASES    JSON list of cases to run (default ["*"])
#   AUTOBAHN_EXCLUDE  JSON list of cases to leave out (default [])
#   AUTOBAHN_TIMEOUT  seconds before wstest is killed (default 900)
#   AUTOBAHN_WAIT     seconds to wait for the server's port to accept (default 10)
#   AUTOBAHN_VERBOSE  1 = stream wstest's output instead of logging it to a file
set -euo pipefail

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
if [ "$#" -gt 1 ]; then usage >&2; exit 2; fi

URL="${1:-ws://127.0.0.1:9001/echo}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${AUTOBAHN_VENV:-$HOME/.cache/shardcast-autobahn-venv}"
OUT="${AUTOBAHN_OUT:-$ROOT/target/autobahn}"
AGENT="${AUTOBAHN_AGENT:-shardcast}"
CASES="${AUTOBAHN_CASES:-[\"*\"]}"
EXCLUDE="${AUTOBAHN_EXCLUDE:-[]}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-900}"
WAIT="${AUTOBAHN_WAIT:-10}"
PY27="${AUTOBAHN_PYTHON:-${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python2.7}"
# virtualenv 16.x is a single module that runs on (and bundles pip 20.3.4,
# setuptools 44.1.1 and wheel 0.36.2 for) Python 2.7; Python 2.7 has no venv.
VIRTUALENV_VERSION=16.7.12
REQS="$HERE/requirements.txt"
PIP_QUIET=(--quiet --disable-pip-version-check --no-python-version-warning)

log() { printf 'autobahn-run: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

command -v python3 >/dev/null || die "python3 is required (for the spec and summarize.py)"
[ -x "$PY27" ] || die "no Python 2.7 interpreter at $PY27 (install it with 'pyenv install 2.7.18' or set AUTOBAHN_PYTHON)"

case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/shardcast-autobahn.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- virtualenv -------------------------------------------------------------
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; }

if ! venv_ok; then
  if [ -e "$VENV" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
    die "$VENV exists but is not a Python 2.7 virtualenv; remove it or set AUTOBAHN_VENV"
  fi
  log "creating Python 2.7 virtualenv at $VENV"
  # (the interpreter's own pip may be too old for --no-python-version-warning)
  "$PY27" -m pip install -qq --disable-pip-version-check --no-deps --target "$WORK/bootstrap" \
    "virtualenv==$VIRTUALENV_VERSION"
  mkdir -p "$(dirname "$VENV")"
  PYTHONPATH="$WORK/bootstrap" "$PY27" -m virtualenv --quiet --no-download -p "$PY27" "$VENV" >/dev/null
fi

STAMP="$VENV/.shardcast-requirements.sha256"
WANT="$( (cat "$REQS"; echo "virtualenv==$VIRTUALENV_VERSION") | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/wstest" ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  log "installing $REQS into $VENV"
  # No build isolation: the few sdists build with the venv's own setuptools,
  # so nothing unpinned (e.g. Cython for wsaccel) is fetched at build time.
  "$VENV/bin/pip" install "${PIP_QUIET[@]}" --no-build-isolation -r "$REQS"
  echo "$WANT" > "$STAMP"
fi

# --- wait for the server ----------------------------------------------------
python3 - "$URL" "$WAIT" <<'EOF' || exit 2
import socket, sys, time
from urllib.parse import urlsplit
url, wait = sys.argv[1], float(sys.argv[2])
u = urlsplit(url)
if u.scheme not in ("ws", "wss") or not u.hostname:
    sys.exit("autobahn-run: error: not a ws:// or wss:// URL: %s" % url)
port = u.port or (443 if u.scheme == "wss" else 80)
deadline = time.monotonic() + wait
while True:
    try:
        socket.create_connection((u.hostname, port), timeout=2).close()
        break
    except OSError as e:
        if time.monotonic() >= deadline:
            sys.exit("autobahn-run: error: nothing accepts connections at %s:%d (%s); "
                     "start the server first, e.g. shardcast serve --echo-endpoint "
                     "--listen 127.0.0.1:9001" % (u.hostname, port, e))
        time.sleep(0.2)
EOF

# --- spec and run -----------------------------------------------------------
python3 - "$URL" "$AGENT" "$OUT" "$CASES" "$EXCLUDE" > "$WORK/fuzzingclient.json" <<'EOF'
import json, sys
url, agent, outdir, cases, exclude = sys.argv[1:6]
json.dump({
    "options": {"failByDrop": False},
    "outdir": outdir,
    "servers": [{"agent": agent, "url": url}],
    "cases": json.loads(cases),
    # 12.* and 13.* are permessage-deflate (negotiated since issue 11).
    "exclude-cases": json.loads(exclude),
    "exclude-agent-cases": {},
}, sys.stdout, indent=2)
EOF
cp "$WORK/fuzzingclient.json" "$OUT/fuzzingclient.json"

# Remove the previous run's report so a failed run is never judged on stale data.
rm -f "$OUT/index.json" "$OUT/index.html" "$OUT/wstest.log" "$OUT"/*_case_*.json "$OUT"/*_case_*.html

log "running wstest -m fuzzingclient against $URL (report in $OUT)"
start=$SECONDS
rc=0
if [ "${AUTOBAHN_VERBOSE:-0}" = 1 ]; then
  (cd "$WORK" && timeout "$TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$WORK/fuzzingclient.json") || rc=$?
else
  (cd "$WORK" && timeout "$TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$WORK/fuzzingclient.json") \
    > "$OUT/wstest.log" 2>&1 || rc=$?
fi
log "wstest finished in $((SECONDS - start)) s (exit $rc)"
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && log "wstest was killed after ${TIMEOUT} s (AUTOBAHN_TIMEOUT)"
  if [ -f "$OUT/wstest.log" ]; then grep -v '^Cases = ' "$OUT/wstest.log" | tail -n 30 >&2; fi
fi
if [ ! -f "$OUT/index.json" ]; then
  log "error: wstest wrote no $OUT/index.json"
  [ "$rc" -ne 0 ] && exit "$rc"
  exit 2
fi

src=0
python3 "$HERE/summarize.py" "$OUT" || src=$?
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$src"
