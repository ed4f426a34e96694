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
(cd "$root" && cargo build --release -p coilwork-gateway --example byte_relay --quiet)
coilwork="$root/target/release/coilwork"
relay="$root/target/release/examples/byte_relay"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts a process with its stdout in $1; waits for a line matching $2.
# Sets $addr (the first 127.0.0.1:PORT after the pattern) and $pid. Not run
# in a subshell, so every process started is killed on exit.
start() {
  local log="$1" pattern="$2"; shift 2
  "$@" >"$log" 2>/dev/null &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    grep -q "$pattern" "$log" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(grep -o "$pattern[^ ]*" "$log" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+')
  [ -n "$addr" ] || { echo "gateway.sh: $* did not start (see $log)" >&2; exit 1; }
}

# 128: at least the 80 requests the 10 x 8 load keeps in flight, so no
# client's batch is split across two upstream writes.
inflight="${MAX_IN_FLIGHT:-128}"
echo "== coilwork gateway benchmark: $(date -u +%FT%TZ), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "   machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); every process (loadgen, serve, gateway) on it"
echo "   measured: FC3 (10 registers) throughput and latency from the loadgen, ${duration}s per run after 1s warm-up,"
echo "   straight to 'coilwork serve' and through 'coilwork gateway --upstream tcp:' (--max-in-flight $inflight);"
echo "   ratio = gateway req/s / direct req/s for the same shape (goal >= 0.80 at conns=10 and at pipeline=8);"
echo "   added latency = gateway p50/p99 - direct p50/p99. 'server cpu' is the serve (direct) or gateway process."
echo "   floor = the same through byte_relay (no Modbus work: one upstream connection per client, bytes copied"
echo "   both ways, one thread): what any proxy costs on this machine before it reads a frame."
start "$work/serve.log" "on 127.0.0.1:" "$coilwork" serve --address 127.0.0.1:0
direct=$addr direct_pid=$pid
start "$work/gw.log" "Modbus/TCP 127.0.0.1:" "$coilwork" gateway --listen 127.0.0.1:0 \
  --upstream "tcp:$direct" --max-in-flight "$inflight" --queue-depth 1024 --log error
gw=$addr gw_pid=$pid
start "$work/relay.log" "relay on 127.0.0.1:" "$relay" 127.0.0.1:0 "$direct"
relay_addr=$addr relay_pid=$pid

# Runs the loadgen; prints its report and leaves "rps p50 p99" in $result.
run() {
  local out
  out=$("$loadgen" --addr "$1" --conns "$2" --pipeline "$3" --duration "$duration" --server-pid "$5" --label "$4")
  echo "$out"
  result=$(echo "$out" | awk '/throughput:/ {r=$2} /latency us:/ {p50=$4; p99=$8} END {print r, p50, p99}')
}
echo "== TCP upstream: direct vs gateway =="
summary=()
for shape in "10 1" "1 8" "10 8"; do
  set -- $shape
  run "$direct" "$1" "$2" "direct conns=$1 pipeline=$2" "$direct_pid"; d=($result)
  run "$gw" "$1" "$2" "gateway conns=$1 pipeline=$2" "$gw_pid"; g=($result)
  run "$relay_addr" "$1" "$2" "byte_relay conns=$1 pipeline=$2" "$relay_pid"; r=($result)
  summary+=("$(awk -v c="$1" -v p="$2" -v dr="${d[0]}" -v gr="${g[0]}" -v rr="${r[0]}" -v d50="${d[1]}" -v g50="${g[1]}" -v d99="${d[2]}" -v g99="${g[2]}" \
    'BEGIN { printf "conns=%-3s pipeline=%-2s direct %8.0f req/s  gateway %8.0f req/s  ratio %.2f (floor %.2f)  added p50 %+.0f us  p99 %+.0f us", c, p, dr, gr, (dr > 0 ? gr / dr : 0), (dr > 0 ? rr / dr : 0), g50 - d50, g99 - d99 }')")
done
echo "== summary (gateway vs direct) =="
printf '%s\n' "${summary[@]}"

if command -v socat >/dev/null; then
  echo "== serial RTU bus behind the gateway (19200 8N1, socat pty pair) =="
  dir="$(mktemp -d)"
  socat pty,raw,echo=0,link="$dir/a" pty,raw,echo=0,link="$dir/b" & pids+=($!)
  sleep 0.5
  "$coilwork" serve --transport serial --port "$dir/a" --baudrate 19200 --parity none >/dev/null 2>&1 & pids+=($!)
  start "$work/sgw.log" "Modbus/TCP 127.0.0.1:" "$coilwork" gateway --listen 127.0.0.1:0 \
    --upstream "serial:$dir/b" --baudrate 19200 --parity none --log error
  # A pty has no wire time: 1/rate is the whole cycle per request. Of it,
  # one t3.5 (2.0 ms at 19200) is the gateway's silence after each answer;
  # `coilwork serve` answers a request of known length without waiting for
  # its own t3.5, so the rest is transfer, serving and scheduling. On a real
  # line add 17.2 ms of wire time (8 + 25 bytes).
  run "$addr" 10 1 "serial-gateway conns=10" "$pid"
  echo "bus cycle per request = 1/rate; of it, the gateway's t3.5 silence = 2.0 ms at 19200 baud"
  rm -rf "$dir"
fi
