#!/usr/bin/env bash
# Modbus/UDP end-to-end benchmark (the shared harness's loadgen speaks TCP
# only): coilwork's UDP servers (tokio, smol, async-std, blocking) beside a
# UDP ceiling (canned answers, no Modbus work), driven by coilwork-udp-load,
# FC3 read of 10 registers, 1 and 10 sockets, one request in flight each.
#
#   bash benches/udp.sh                 # 3 reps of 5 s (~2 min)
#   QUICK=1 bash benches/udp.sh         # 1 rep of 1 s
#   REPS=1 DURATION=3 bash benches/udp.sh
#
# Server on CPU $SERVER_CPU (0), load on CPU $CLIENT_CPU (1), servers taking
# turns inside each repetition; every figure is the median of REPS runs.
# Raw JSON lines go to $RAW (default target/bench/udp.jsonl); the markdown
# table goes to stdout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPS=${REPS:-3}
if [ "${QUICK:-0}" = 1 ]; then DURATION=1; WARMUP=0.5; REPS=1; fi
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SOCKETS=${SOCKETS:-1 10}
RAW=${RAW:-$root/target/bench/udp.jsonl}
mkdir -p "$(dirname "$RAW")"
: >"$RAW"

(cd "$root" && cargo build --release -p coilwork-bench --quiet)
bench="$root/target/release/coilwork-bench-server"
load="$root/target/release/coilwork-udp-load"

SERVERS=(
  "udp-ceiling|--adapter udp-ceiling"
  "coilwork-tokio|--adapter tokio --udp"
  "coilwork-smol|--adapter smol --udp"
  "coilwork-async-std|--adapter async-std --udp"
  "coilwork-blocking|--adapter blocking --udp"
)
NAMES=()
PIDS=()
ADDRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for s in "${SERVERS[@]}"; do
  name=${s%%|*}
  log="$(dirname "$RAW")/udp-$name.log"
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" "$bench" ${s#*|} --address 127.0.0.1:0 >"$log" 2>&1 &
  pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^coilwork-bench-server: serving .* on //p' "$log")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "udp.sh: $name exited (see $log)" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "udp.sh: $name did not start" >&2; exit 1; }
  NAMES+=("$name")
  PIDS+=("$pid")
  ADDRS+=("$addr")
  echo "started $name pid $pid on $addr (cpu $SERVER_CPU)" >&2
done

for rep in $(seq 1 "$REPS"); do
  for n in $SOCKETS; do
    for i in "${!NAMES[@]}"; do
      line=$(taskset -c "$CLIENT_CPU" "$load" --addr "${ADDRS[$i]}" --conns "$n" --op read-holding --count 10 \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "${PIDS[$i]}" --label "${NAMES[$i]}" --json) ||
        line="{\"label\":\"${NAMES[$i]}\",\"conns\":$n,\"failed\":true}"
      echo "$line" >>"$RAW"
      python3 -c '
import json, sys
d = json.loads(sys.argv[1]); r = int(sys.argv[2])
if d.get("failed"): print("  %s %d sockets rep %d: FAILED" % (d["label"], d["conns"], r)); sys.exit()
print("  %-18s %2d sockets rep %d: %8.0f req/s  p50 %6.1f  p99 %7.1f us  srv %s us/req  err %d  timeouts %d  load %.2f" % (
  d["label"], d["conns"], r, d["rps"], d["lat_us"]["p50"], d["lat_us"]["p99"], d["server_cpu_us_per_req"],
  d["errors"], d["timeouts"], d["loadavg_1m"]))' "$line" "$rep" >&2
    done
  done
done

python3 - "$RAW" "$DURATION" "$REPS" <<'PY'
import json, statistics, sys
raw, duration, reps = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.loads(l) for l in open(raw) if l.strip()]
names, socks = [], []
for d in runs:
    if d["label"] not in names: names.append(d["label"])
    if d["conns"] not in socks: socks.append(d["conns"])
def med(name, n, key):
    v = [d[key] for d in runs if d["label"] == name and d["conns"] == n and not d.get("failed") and d.get(key) is not None]
    return statistics.median(v) if v else None
print(f"Modbus/UDP, FC3 read 10 registers, 1 request in flight per socket; median of {reps} x {duration} s; "
      "server pinned on one CPU, load generator on the other.\n")
hdr = "| server | " + " | ".join(f"{n} socket{'s' if n > 1 else ''}: req/s (× ceiling) | srv µs/req" for n in socks) + " | errors | timeouts |"
print(hdr)
print("|---|" + "---:|---:|" * len(socks) + "---:|---:|")
for name in names:
    cells = []
    for n in socks:
        rps, ceil, us = med(name, n, "rps"), med("udp-ceiling", n, "rps"), med(name, n, "server_cpu_us_per_req")
        if rps is None:
            cells += ["failed", "-"]
            continue
        ratio = f" ({rps / ceil:.2f})" if ceil else ""
        cells += [f"{rps:,.0f}{ratio}", f"{us:.2f}" if us is not None else "-"]
    errs = sum(d.get("errors", 0) for d in runs if d["label"] == name)
    tos = sum(d.get("timeouts", 0) for d in runs if d["label"] == name)
    print(f"| {name} | " + " | ".join(cells) + f" | {errs} | {tos} |")
loads = [d["loadavg_1m"] for d in runs if "loadavg_1m" in d]
if loads: print(f"\nLoad average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f} on {__import__('os').cpu_count()} CPUs.")
PY
