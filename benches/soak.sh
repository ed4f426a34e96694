#!/usr/bin/env bash
# Soak test: `coilwork serve` under a bounded mixed load (benches/soak.py)
# for DURATION seconds (default 600): 200 validating clients writing and
# reading back their own registers, garbage and bad-MBAP-length clients,
# slowloris partial frames, connect/RST churn and periodic bursts past
# --max-connections. Samples RSS, descriptors and threads every second.
#
#   bash benches/soak.sh            # 10 minutes
#   bash benches/soak.sh 20         # the CI smoke run
#
# COILWORK_BIN picks the server binary (default: a debug build of
# coilwork-cli in this checkout's target/). The figures are one JSON line
# on stdout; the exit status is non-zero if a well-formed client saw an
# error, an acknowledged write was lost, the server died, or RSS or
# descriptors drifted past the bounds (see soak.py). SOAK_SAMPLES=FILE keeps
# the per-second samples.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-600}"
bin="${COILWORK_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q -p coilwork-cli
  bin="target/debug/coilwork"
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"$bin" serve --address "127.0.0.1:$port" --max-connections 300 --holding-registers 5000 \
  >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q "serving" "$log" 2>/dev/null && break
  sleep 0.1
done
grep -q "serving" "$log" || { echo "coilwork did not start:" >&2; cat "$log" >&2; exit 1; }

status=0
python3 benches/soak.py "$port" "$server" "$duration" || status=$?
if ! kill -0 "$server" 2>/dev/null; then
  echo "the server died:" >&2
  tail -n 20 "$log" >&2
  status=1
fi
exit $status
