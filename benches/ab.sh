#!/usr/bin/env bash
# Paired A/B of two Modbus/TCP servers with the shared harness's loadgen:
# N pairs of short runs, the servers alternating (ABBA...), each pinned on
# $SERVER_CPU with loadgen on $CLIENT_CPU; prints the median of the paired
# ratios B/A (server CPU per request, req/s) with a bootstrap 95 % interval,
# and the server's user and system CPU per request (from /proc/PID/stat).
# Pairs taken minutes apart still see the machine's drift; pairing cancels
# the part of it that is slower than one pair.
#
#   bash benches/ab.sh 'CMD_A' 'CMD_B'        # {PORT} in each command
#   PAIRS=24 CONNS=10 PIPELINE=1 LOADGEN_ARGS='--count 125' bash benches/ab.sh ...
#
# Example (the tokio adapter against the tokio ceiling):
#   bash benches/ab.sh 'target/bench/harness/target/release/ceiling-tokio {PORT}' \
#                      'target/release/coilwork serve --address 127.0.0.1:{PORT}'
# The harness binaries exist once `bash benches/e2e.sh` (or QUICK=1) has run.
#
# Metrics on vs off (issue 17): METRICS=1 and one command; A is the command
# as given, B the same with `--metrics 127.0.0.1:{MPORT}` added, scraped
# every $SCRAPE_EVERY seconds (default 1) during its runs as Prometheus would:
#   METRICS=1 bash benches/ab.sh 'target/release/coilwork serve --address 127.0.0.1:{PORT}'
# {MPORT} (a port next to {PORT}) may also be used in either command directly.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
A="$1"
if [ "${METRICS:-}" = 1 ]; then
  B="${2:-$1 --metrics 127.0.0.1:{MPORT}}"
else
  B="$2"
fi
SCRAPE_EVERY=${SCRAPE_EVERY:-1}
PAIRS=${PAIRS:-20}
CONNS=${CONNS:-10}
PIPELINE=${PIPELINE:-1}
DURATION=${DURATION:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOADGEN=${LOADGEN:-$root/target/bench/harness/target/release/loadgen}
[ -x "$LOADGEN" ] || { echo "no loadgen at $LOADGEN: run 'QUICK=1 bash benches/e2e.sh' first" >&2; exit 2; }
out="$(mktemp)"
scrapes="$(mktemp)"
trap 'rm -f "$out" "$scrapes"' EXIT

tck=$(getconf CLK_TCK)
# utime and stime of a process, in clock ticks.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# Scrapes http://127.0.0.1:$1/metrics every $SCRAPE_EVERY s until killed;
# appends each answer's size in bytes (0: no answer) to $2.
scraper() {
  while sleep "$SCRAPE_EVERY"; do
    # shellcheck disable=SC2015
    { printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && wc -c <&3; } 3<>"/dev/tcp/127.0.0.1/$1" \
      2>/dev/null >>"$2" || echo 0 >>"$2"
  done
}

one() {
  local port=$((20000 + RANDOM % 20000))
  local mport=$((port + 1))
  local cmd="${1//\{PORT\}/$port}"
  local scraping=
  if [[ "$cmd" == *"{MPORT}"* ]]; then
    cmd="${cmd//\{MPORT\}/$mport}"
    scraping=1
  fi
  (cd "$root" && exec taskset -c "$SERVER_CPU" bash -c "exec $cmd") >/dev/null 2>&1 &
  local sp=$!
  sleep 0.4
  local scr=
  if [ -n "$scraping" ]; then
    scraper "$mport" "$scrapes" >/dev/null &
    scr=$!
  fi
  # Setup and warm-up in a run of their own, so that the server's user and
  # system time can be read around the measured run alone.
  # shellcheck disable=SC2086
  taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$port" --conns "$CONNS" --pipeline "$PIPELINE" \
    --duration 0.5 --warmup 0 ${LOADGEN_ARGS:-} --json >/dev/null 2>&1 || true
  local t0 t1 run
  t0=$(ticks "$sp")
  # shellcheck disable=SC2086
  run=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$port" --conns "$CONNS" --pipeline "$PIPELINE" \
    --duration "$DURATION" --warmup 0 --no-setup --server-pid "$sp" ${LOADGEN_ARGS:-} --json 2>/dev/null | tr -d '\n')
  t1=$(ticks "$sp")
  # The loadgen record with the server's user and system ticks of the run added.
  echo "${run%\}}, \"user_ticks\": $(( ${t1% *} - ${t0% *} )), \"sys_ticks\": $(( ${t1#* } - ${t0#* } ))}"
  if [ -n "$scr" ]; then
    kill "$scr" 2>/dev/null || true
    wait "$scr" 2>/dev/null || true
  fi
  kill "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
}

for i in $(seq "$PAIRS"); do
  if ((i % 2)); then
    a=$(one "$A"); b=$(one "$B")
  else
    b=$(one "$B"); a=$(one "$A")
  fi
  printf '%s\n%s\n' "$a" "$b" >>"$out"
done

if [ -s "$scrapes" ]; then
  # Proof the metrics side served while measured: scrapes and how many failed.
  awk '{ n++; if ($1 < 100) bad++ } END { printf "metrics scrapes during B: %d, failed: %d\n", n, bad }' "$scrapes"
fi

python3 - "$out" "$tck" <<'PY'
import json, random, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tick_us = 1e6 / int(sys.argv[2])
pairs = list(zip(rows[0::2], rows[1::2]))
def ci(xs):
    rnd = random.Random(1)
    meds = sorted(st.median(rnd.choices(xs, k=len(xs))) for _ in range(2000))
    return meds[50], meds[1949]
cpu = [b["server_cpu_us_per_req"] / a["server_cpu_us_per_req"] for a, b in pairs]
rps = [b["rps"] / a["rps"] for a, b in pairs]
errors = sum(r["errors"] + r["timeouts"] for r in rows)
print(f"pairs {len(pairs)}, errors+timeouts {errors}")
print(f"A: {st.median(a['server_cpu_us_per_req'] for a, _ in pairs):.2f} us/req, {st.median(a['rps'] for a, _ in pairs):,.0f} req/s (medians)")
print(f"B: {st.median(b['server_cpu_us_per_req'] for _, b in pairs):.2f} us/req, {st.median(b['rps'] for _, b in pairs):,.0f} req/s (medians)")
lo, hi = ci(cpu)
print(f"B/A server CPU per request: {st.median(cpu):.3f} (95% {lo:.3f}-{hi:.3f})")
lo, hi = ci(rps)
print(f"B/A req/s: {st.median(rps):.3f} (95% {lo:.3f}-{hi:.3f})")
# Where the CPU goes: user space (the server's own code) and the kernel
# (system calls, the same for two servers making the same calls).
def per_req(r, k):
    return r[k] * tick_us / max(r["ok"], 1)
for k, name in (("user_ticks", "user"), ("sys_ticks", "system")):
    da = st.median(per_req(a, k) for a, _ in pairs)
    db = st.median(per_req(b, k) for _, b in pairs)
    diff = [per_req(b, k) - per_req(a, k) for a, b in pairs]
    lo, hi = ci(diff)
    print(f"{name} CPU per request: A {da:.3f} us, B {db:.3f} us, B-A {st.median(diff):+.3f} us (95% {lo:+.3f}-{hi:+.3f})")
PY
