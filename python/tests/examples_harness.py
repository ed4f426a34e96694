"""Runs one reference example in a subprocess, checks what it serves, then stops it with Ctrl-C.

Usage: python examples_harness.py EXAMPLE.py CHECK_JSON. Run by test_examples.py
inside a network namespace of its own, so the examples' fixed ports (502,
802, 5020, 8080) cannot collide with anything else on the machine.
"""

import json
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request


def wait_port(port, proc, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"example exited early: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def check(spec):
    kind = spec["kind"]
    if kind in ("tcp", "tls"):
        from pymodbus.client import ModbusTcpClient, ModbusTlsClient

        if kind == "tls":
            ctx = ssl.create_default_context(cafile=spec["cafile"])
            ctx.check_hostname = False
            client = ModbusTlsClient("127.0.0.1", port=spec["port"], sslctx=ctx, timeout=3, retries=0)
        else:
            client = ModbusTcpClient("127.0.0.1", port=spec["port"], timeout=3, retries=0)
        assert client.connect()
        try:
            for device_id, address, count, expect in spec["reads"]:
                got = client.read_holding_registers(address, count=count, device_id=device_id).registers
                assert got == expect if expect is not None else len(got) == count, (device_id, address, got, expect)
            for object_id, expect in spec.get("identity", []):
                info = client.read_device_information(read_code=2).information
                assert info[object_id] == expect.encode(), info
        finally:
            client.close()
    elif kind == "raw":
        with socket.create_connection(("127.0.0.1", spec["port"]), timeout=3) as sock:
            pdu = bytes.fromhex(spec["request"])
            sock.sendall(struct.pack(">HHHB", 1, 0, len(pdu) + 1, 1) + pdu)
            answer = sock.recv(300)
            assert answer[7:] == bytes.fromhex(spec["answer"]), answer
    elif kind == "serial":
        from pymodbus.client import ModbusSerialClient

        client = ModbusSerialClient(spec["tty"], framer="rtu", baudrate=9600, timeout=3, retries=1)
        assert client.connect()
        try:
            assert client.read_holding_registers(0, count=2, device_id=1).registers == spec["expect"]
        finally:
            client.close()
    elif kind == "sim":
        with urllib.request.urlopen(f"http://127.0.0.1:{spec['http']}/", timeout=5) as page:
            assert page.status == 200
        check({"kind": "tcp", "port": spec["port"], "reads": spec["reads"]})


def main():
    example, spec = sys.argv[1], json.loads(sys.argv[2])
    proc = subprocess.Popen([sys.executable, example], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=spec.get("cwd"))
    try:
        if spec["kind"] == "serial":
            time.sleep(1.0)
        else:
            wait_port(spec.get("http", spec.get("port")), proc)
        check(spec)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    allowed = spec.get("exit_codes", [0])
    if proc.returncode not in allowed:
        raise SystemExit(f"exit code {proc.returncode} not in {allowed}: {err}")
    print("example ok", flush=True)


if __name__ == "__main__":
    main()
