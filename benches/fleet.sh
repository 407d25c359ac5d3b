#!/usr/bin/env bash
# The reasoning cache in fleet mode (issue 26) against a redis-server of its own on a free
# loopback port, stopped afterwards: hit rate of three replicas round-robin against one cache on
# the same request sequence, lookup time with sharing on and off, and Redis memory per 100 k
# entries. Usage (after `make build models`): benches/fleet.sh [entries, default 100000]
set -euo pipefail
ENTRIES=${1:-100000}
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/reasoning-gateway/target}/release
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" >"$T/redis.log" 2>&1 &
for _ in $(seq 200); do
  [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.05
done
[ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start" >&2; cat "$T/redis.log" >&2; exit 1; }
echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on port $PORT"
"$BIN/fleet-bench" hits models/minilm models/onnxruntime/libonnxruntime.so "redis://127.0.0.1:$PORT/0"
"$BIN/fleet-bench" memory "$ENTRIES" "redis://127.0.0.1:$PORT/0"
