#!/usr/bin/env bash
# Gateway benchmark (issue 15), for the lead to run on a quiet machine:
#   1. `coilwork serve` directly vs through `coilwork gateway --upstream tcp:`
#      at 10 connections and at pipeline 8 (goal: gateway >= 0.8x direct);
#      the loadgen's p50/p99 give the gateway's added latency;
#   2. serial: `coilwork serve --transport serial` on a socat
#      pty pair behind the gateway, 10 connections: the bus gap between one
#      answer and the next request (t3.5 + scheduling) from the round trips.
#
#   bash benches/gateway.sh                 # ~2 min
#   DURATION=10 bash benches/gateway.sh
#
# Uses the shared harness's loadgen (../shared/bench/loadgen), built in a
# scratch copy under target/bench as benches/e2e.sh does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${SHARED_BENCH:-$root/../shared/bench}"
[ -n "${SHARED_BENCH:-}" ] || [ -d "$shared" ] || shared="$root/../../shared/bench"
[ -d "$shared/loadgen" ] || { echo "gateway.sh: no loadgen at $shared/loadgen (set SHARED_BENCH)" >&2; exit 1; }
work="${BENCH_WORK:-$root/target/bench}"
duration="${DURATION:-5}"
mkdir -p "$work/loadgen"
(cd "$shared/loadgen" && tar --exclude=./target -cf - .) | (cd "$work/loadgen" && tar -xf -)
grep -q '^\[workspace\]' "$work/loadgen/Cargo.toml" || printf '\n[workspace]\n' >>"$work/loadgen/Cargo.toml"
(cd "$work/loadgen" && cargo build --release --quiet)
loadgen="$(find "$work/loadgen/target/release" -maxdepth 1 -type f -perm -u+x -name 'loadgen*' | head -1)"
(cd "$root" && cargo build --release -p coilwork-cli --quiet)
coilwork="$root/target/release/coilwork"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts a process with its stdout in $2; waits for a line matching $3; prints the address.
start() {
  local log="$1" pattern="$2"; shift 2
  "$@" >"$log" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q "$pattern" "$log" 2>/dev/null && break
    sleep 0.1
  done
  grep -o "$pattern[^ ]*" "$log" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+'
}

direct=$(start "$work/serve.log" "on 127.0.0.1:" "$coilwork" serve --address 127.0.0.1:0)
gw=$(start "$work/gw.log" "Modbus/TCP 127.0.0.1:" "$coilwork" gateway --listen 127.0.0.1:0 \
  --upstream "tcp:$direct" --max-in-flight 64 --queue-depth 1024 --log error)

run() { "$loadgen" --addr "$1" --conns "$2" --pipeline "$3" --duration "$duration" --label "$4"; }
echo "== TCP upstream: direct vs gateway =="
for shape in "10 1" "1 8" "10 8"; do
  set -- $shape
  run "$direct" "$1" "$2" "direct conns=$1 pipeline=$2"
  run "$gw" "$1" "$2" "gateway conns=$1 pipeline=$2"
done

if command -v socat >/dev/null; then
  echo "== serial RTU bus behind the gateway (19200 8N1, socat pty pair) =="
  dir="$(mktemp -d)"
  socat pty,raw,echo=0,link="$dir/a" pty,raw,echo=0,link="$dir/b" & pids+=($!)
  sleep 0.5
  "$coilwork" serve --transport serial --port "$dir/a" --baudrate 19200 --parity none >/dev/null 2>&1 & pids+=($!)
  sgw=$(start "$work/sgw.log" "Modbus/TCP 127.0.0.1:" "$coilwork" gateway --listen 127.0.0.1:0 \
    --upstream "serial:$dir/b" --baudrate 19200 --parity none --log error)
  # A pty has no wire time: 1/rate is the whole cycle per request, of which
  # 2 x t3.5 (the server's end-of-frame silence and the gateway's silence
  # after the answer, 2.0 ms each at 19200) is the spec's part; the rest is
  # scheduling. On a real line add 17.2 ms of wire time (8 + 25 bytes).
  run "$sgw" 10 1 "serial-gateway conns=10"
  echo "bus cycle per request = 1/rate; spec minimum on a pty = 4.0 ms (2 x t3.5)"
  rm -rf "$dir"
fi
