#!/bin/bash
# Property-based API testing: schemathesis (PyPI) generates thousands of requests from
# crates/api/hearth-api.yaml against a real `hearth --api-sock` (Firecracker-style, before
# boot) and fails on any 5xx or a dead server. The VM-facing half (boot, pause, snapshot) is
# crates/hearth/tests/api_lifecycle.rs; this one hunts for requests that crash or confuse hearth.
#
#   tests/api/fuzz.sh [--max-examples N]     (needs: socat, python3-venv; builds hearth debug)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
MAX=${2:-25}
VENV=${HEARTH_CACHE:-$HOME/.cache/hearth}/venv-schemathesis
ST_VERSION=4.32.5
say() { echo "[api-fuzz] $*"; }

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
	say "installing schemathesis $ST_VERSION into $VENV (PyPI) ..."
	rm -rf "$VENV"
	/usr/bin/python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi
cargo build -q -p hearth
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
SOCK=$WORK/api.sock
target/debug/hearth --api-sock "$SOCK" </dev/null >"$WORK/hearth.out" 2>&1 &
HEARTH=$!
PIDS+=("$HEARTH")
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { say "hearth did not create $SOCK"; cat "$WORK/hearth.out"; exit 1; }
# schemathesis speaks TCP; socat bridges it to hearth's Unix socket.
PORT=$(( 20000 + RANDOM % 20000 ))
socat "TCP-LISTEN:$PORT,fork,reuseaddr,bind=127.0.0.1" "UNIX-CONNECT:$SOCK" &
PIDS+=("$!")
sleep 0.3
say "schemathesis against hearth (pid $HEARTH), max $MAX examples per operation ..."
status=0
"$VENV/bin/schemathesis" run crates/api/hearth-api.yaml --url "http://127.0.0.1:$PORT" \
	--checks not_a_server_error --max-examples "$MAX" --no-color --seed 4242 >"$WORK/st.log" 2>&1 || status=$?
grep -E "generated|passed|failed|Failures|not_a_server_error" "$WORK/st.log" | tail -8
if ! kill -0 "$HEARTH" 2>/dev/null; then
	say "FAIL: hearth died during the run"; cat "$WORK/hearth.out"; exit 1
fi
if [ "$status" -ne 0 ]; then
	say "FAIL: schemathesis found problems:"; tail -60 "$WORK/st.log"; exit 1
fi
say "ok: no 5xx, hearth alive"
