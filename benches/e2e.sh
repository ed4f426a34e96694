#!/usr/bin/env bash
# End-to-end server benchmark: coilwork beside the peer servers (pymodbus,
# tokio-modbus, libmodbus) and the no-work ceiling servers, in one run of
# the shared harness (../shared/bench, copied to a scratch directory so its
# build products stay out of shared/).
#
#   bash benches/e2e.sh              # full run (~15 min)
#   QUICK=1 bash benches/e2e.sh      # smoke run (~2 min)
#   ONLY=ceiling-tokio,coilwork bash benches/e2e.sh
#
# Any variable run.sh knows (REPS, MEM, UNPINNED, OUT, ...) passes through.
# The report lands in $OUT (default: target/bench/RESULTS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${SHARED_BENCH:-$root/../shared/bench}"
work="${BENCH_WORK:-$root/target/bench}"
[ -d "$shared" ] || { echo "e2e.sh: no shared bench at $shared (set SHARED_BENCH)" >&2; exit 1; }

mkdir -p "$work"
mkdir -p "$work/harness"
# Copy the harness sources (not its build products or old results).
(cd "$shared" && tar --exclude=./target --exclude=./results -cf - .) | (cd "$work/harness" && tar -xf -)
(cd "$root" && cargo build --release -p coilwork-cli --quiet)
coilwork="$root/target/release/coilwork"

export OUT="${OUT:-$work/RESULTS.md}"
export EXTRA="${EXTRA:-coilwork | $coilwork serve --address 127.0.0.1:{PORT}}"
cd "$work/harness"
bash run.sh
echo "report: $OUT"
