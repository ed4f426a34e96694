#!/usr/bin/env bash
# End-to-end server benchmark: coilwork with each adapter (coilwork-tokio =
# `coilwork serve`, coilwork-smol, coilwork-async-std, coilwork-blocking =
# `coilwork-bench-server --adapter ...`, the Python package's server =
# benches/python_server.py, plain and with a Python setValues override; `coilwork simulate` on the
# issue-16 register map = benches/simulate_server.sh) beside the peer servers (pymodbus,
# tokio-modbus, libmodbus) and the no-work ceiling servers (plus
# smol-ceiling = `coilwork-bench-server --adapter smol-ceiling`, the no-work
# ceiling on smol: coilwork-smol / smol-ceiling is what coilwork costs over
# smol itself; named so that the harness does not take it for one of its
# reference ceilings), in one run of
# the shared harness (../shared/bench, copied to a scratch directory so its
# build products stay out of shared/).
#
#   bash benches/e2e.sh              # full run (~20 min)
#   QUICK=1 bash benches/e2e.sh      # smoke run (~3 min)
#   ONLY=ceiling-blocking,coilwork-blocking QUICK=1 MEM= UNPINNED= bash benches/e2e.sh
#
# Modbus/UDP (the harness's loadgen speaks TCP only): benches/udp.sh.
#
# Any variable run.sh knows (REPS, MEM, UNPINNED, OUT, ...) passes through.
# The report lands in $OUT (default: target/bench/RESULTS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${SHARED_BENCH:-$root/../shared/bench}"
# A git worktree under /work/wt/<name> sits one level deeper than /work/main.
[ -n "${SHARED_BENCH:-}" ] || [ -d "$shared" ] || shared="$root/../../shared/bench"
work="${BENCH_WORK:-$root/target/bench}"
[ -d "$shared" ] || { echo "e2e.sh: no shared bench at $shared (set SHARED_BENCH)" >&2; exit 1; }

mkdir -p "$work"
mkdir -p "$work/harness"
# Copy the harness sources (not its build products or old results).
(cd "$shared" && tar --exclude=./target --exclude=./results -cf - .) | (cd "$work/harness" && tar -xf -)
# The copies sit under this workspace's directory: mark each crate as its own
# workspace, or cargo takes it for a missing member of ours.
for m in "$work"/harness/loadgen/Cargo.toml "$work"/harness/peers/*/Cargo.toml; do
  if [ -f "$m" ] && ! grep -q '^\[workspace\]' "$m"; then printf '\n[workspace]\n' >>"$m"; fi
done
(cd "$root" && cargo build --release -p coilwork-cli -p coilwork-bench --quiet)
coilwork="$root/target/release/coilwork"
bench="$root/target/release/coilwork-bench-server"
# The Python package (issue 14): a release wheel in a venv of its own.
pyvenv="$work/pyvenv"
[ -x "$pyvenv/bin/python" ] || python3 -m venv "$pyvenv"
"$pyvenv/bin/pip" install -q "$root/python"
pyserver="$pyvenv/bin/python $root/benches/python_server.py"

export OUT="${OUT:-$work/RESULTS.md}"
default_extra="coilwork-tokio | $coilwork serve --address 127.0.0.1:{PORT}
coilwork-smol | $bench --adapter smol --address 127.0.0.1:{PORT}
coilwork-async-std | $bench --adapter async-std --address 127.0.0.1:{PORT}
coilwork-blocking | $bench --adapter blocking --address 127.0.0.1:{PORT}
smol-ceiling | $bench --adapter smol-ceiling --address 127.0.0.1:{PORT}
coilwork-python | $pyserver {PORT}
coilwork-python-setvalues | $pyserver {PORT} --setvalues
coilwork-simulate | bash $root/benches/simulate_server.sh {PORT} $coilwork"
export EXTRA="${EXTRA:-$default_extra}"
cd "$work/harness"
bash run.sh
echo "report: $OUT"
