#!/usr/bin/env bash
# `coilwork simulate` on the bench's register map, for the shared harness:
# holding registers and coils 0-9999, all writable, no actions (the map of
# issue 16). The harness starts servers as `CMD PORT`; the simulator takes
# its Modbus port from the JSON, so this writes the JSON for PORT and execs
# the simulator (same pid: the harness stops it by that pid). HTTP goes to a
# free port.
#
#   bash benches/simulate_server.sh PORT [COILWORK]   # COILWORK: the binary (default: target/release/coilwork)
set -euo pipefail
port=${1:?usage: simulate_server.sh PORT [COILWORK]}
root="$(cd "$(dirname "$0")/.." && pwd)"
coilwork=${2:-$root/target/release/coilwork}
dir="${TMPDIR:-/tmp}/coilwork-simulate-bench-${USER:-bench}"
mkdir -p "$dir"
json="$dir/map-$port.json"
cat >"$json" <<JSON
{
  "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": $port, "framer": "socket"}},
  "device_list": {"device": {
    "setup": {"co size": 10000, "di size": 10000, "hr size": 10000, "ir size": 10000,
              "shared blocks": true, "type exception": false,
              "defaults": {"value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                           "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}},
    "invalid": [], "write": [[0, 9999]], "uint16": [{"addr": [0, 9999], "value": 0}], "repeat": []
  }}
}
JSON
exec "$coilwork" simulate --json-file "$json" --http-port 0 --log warning
