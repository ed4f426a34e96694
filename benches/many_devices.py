#!/usr/bin/env python3
"""1,000 simulated devices in one `coilwork simulate` process (issue 16, item 4).

Two configurations, generated here:

  units  4 TCP ports, each serving 247 unit ids (1-247) with
         `"device_ids": [[1, 247]]` (a coilwork extension): 988 devices,
         each with registers of its own;
  ports  1,000 `server_list` entries, one TCP port and one device each.

For each, the script starts `coilwork simulate --all` (every port 0: free
ports, read back from the simulator's serving lines), waits until every
port answers a real client (pymodbus: FC3 to unit ids 1, 124 and 247 on
each port of `units`, unit 1 on each port of `ports`; each unit's register
is written first, then read back, so the units are seen to be separate
devices), then reports the resident memory (VmRSS) and the start-up times:
until the last serving line, and until every port had answered.

    COILWORK_PYTHON=/path/to/python-with-pymodbus  # or run it with that python
    python benches/many_devices.py [--coilwork target/release/coilwork] [--only units|ports]

Start-up times depend on the machine's load; memory does not much.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from pymodbus.client import ModbusTcpClient

DEVICE = {
    "setup": {
        "co size": 100, "di size": 100, "hr size": 100, "ir size": 100,
        "shared blocks": True, "type exception": False,
        "defaults": {
            "value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
            "action": {"bits": None, "uint16": None, "uint32": None, "float32": None, "float64": None,
                       "string": None},
        },
    },
    "invalid": [], "write": [[0, 99]], "uint16": [{"addr": [0, 99], "value": 0}], "repeat": [],
}


def server(extra=None):
    entry = {"comm": "tcp", "host": "127.0.0.1", "port": 0, "framer": "socket"}
    entry.update(extra or {})
    return entry


def configs():
    units = {f"port{i}": server({"device_ids": [[1, 247]]}) for i in range(4)}
    ports = {f"dev{i:04}": server() for i in range(1000)}
    return {
        "units": ({"server_list": units, "device_list": {"device": DEVICE}}, [1, 124, 247]),
        "ports": ({"server_list": ports, "device_list": {"device": DEVICE}}, [1]),
    }


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def check_port(port, units):
    """Writes a value per unit, then reads every unit back: separate devices answer their own."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=1)
    if not client.connect():
        raise SystemExit(f"port {port}: no connection")
    try:
        for unit in units:
            r = client.write_register(7, unit, device_id=unit)
            if r.isError():
                raise SystemExit(f"port {port} unit {unit}: write refused: {r}")
        for unit in units:
            r = client.read_holding_registers(7, count=1, device_id=unit)
            if r.isError() or r.registers != [unit]:
                raise SystemExit(f"port {port} unit {unit}: read {r}")
    finally:
        client.close()


def run(name, config, units, coilwork):
    servers = len(config["server_list"])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{name}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        t0 = time.monotonic()
        child = subprocess.Popen(
            [coilwork, "simulate", "--json-file", path, "--all", "--http-port", "0", "--log", "warning"],
            stdout=subprocess.PIPE, text=True)
        try:
            ports = []
            timer = threading.Timer(120, child.kill)
            timer.start()
            for line in child.stdout:
                if "): serving Modbus/TCP on " in line:
                    ports.append(int(line.rsplit(":", 1)[1]))
                if len(ports) == servers:
                    break
            timer.cancel()
            if len(ports) != servers:
                raise SystemExit(f"{name}: {len(ports)} of {servers} servers started")
            serving = time.monotonic() - t0
            for port in ports:
                check_port(port, units)
            answered = time.monotonic() - t0
            rss = rss_kib(child.pid)
        finally:
            child.kill()
            child.wait()
    devices = servers * (247 if name == "units" else 1)
    print(f"{name}: {servers} ports, {devices} devices: all serving after {serving:.2f} s, "
          f"every port answered after {answered:.2f} s, VmRSS {rss / 1024:.1f} MiB", flush=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "target", "release", "coilwork")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coilwork", default=default, help="the coilwork binary")
    ap.add_argument("--only", choices=["units", "ports"])
    args = ap.parse_args()
    for name, (config, units) in configs().items():
        if args.only in (None, name):
            run(name, config, units, args.coilwork)


if __name__ == "__main__":
    sys.exit(main())
