"""The reference's usage examples (shared/reference/pymodbus-server-operations.md),
as written with only ``pymodbus`` changed to ``coilwork``.

Each runs in a subprocess inside a network namespace of its own (``unshare
--net``, root only), so their fixed ports (502, 802, 5020, 8080) never
collide with anything on the machine; without one they are skipped unless
COILWORK_REQUIRE_CLIENTS is set. A pymodbus client checks what each example
serves, then Ctrl-C stops it. The serial example names /dev/ttyUSB0: it runs
with a socat pty in that place's stead (the only change).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _netns_ok():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


NETNS = _netns_ok()
needs_netns = pytest.mark.skipif(
    not NETNS and not os.environ.get("COILWORK_REQUIRE_CLIENTS"), reason="needs root for a network namespace"
)


def as_coilwork(source):
    """The example with ``pymodbus`` changed to ``coilwork`` (and nothing else)."""
    return textwrap.dedent(source).replace("pymodbus", "coilwork")


def run_example(tmp_path, source, spec):
    example = tmp_path / "example.py"
    example.write_text(as_coilwork(source))
    spec.setdefault("cwd", str(tmp_path))
    cmd = [sys.executable, str(HERE / "examples_harness.py"), str(example), json.dumps(spec)]
    if NETNS:
        cmd = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "example ok" in result.stdout


SIMPLE_TCP = """
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext

# Create data stores for different data types
store = ModbusSequentialDataBlock(0, [0] * 100)

# Create device context with data stores
context = ModbusDeviceContext(
    co=store, # coils
    di=store, # discrete inputs
    hr=store, # holding registers
    ir=store # input registers
)

# Create server context
server_context = ModbusServerContext(device_default=context, single=True)

# Start TCP server (blocking)
StartTcpServer(
    context=server_context,
    address=('127.0.0.1', 5020)
)
"""

MULTI_DEVICE = """
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext

# Create data stores for device 1
device1_store = ModbusSequentialDataBlock(0, [10, 20, 30, 40, 50])
device1_context = ModbusDeviceContext(
    co=device1_store,
    di=device1_store,
    hr=device1_store,
    ir=device1_store
)

# Create data stores for device 2
device2_store = ModbusSequentialDataBlock(0, [100, 200, 300, 400, 500])
device2_context = ModbusDeviceContext(
    co=device2_store,
    di=device2_store,
    hr=device2_store,
    ir=device2_store
)

# Create server context with multiple devices
server_context = ModbusServerContext(single=False)
server_context[1] = device1_context # Device ID 1
server_context[2] = device2_context # Device ID 2

# Start server
StartTcpServer(context=server_context, address=('0.0.0.0', 502))
"""

IDENTITY = """
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext
from pymodbus import ModbusDeviceIdentification

# Create data store
store = ModbusSequentialDataBlock(0, [0] * 100)
context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
server_context = ModbusServerContext(device_default=context, single=True)

# Configure device identity
identity = ModbusDeviceIdentification()
identity.VendorName = 'PyModbus'
identity.ProductCode = 'PM'
identity.VendorUrl = 'http://github.com/riptideio/pymodbus/'
identity.ProductName = 'PyModbus Server'
identity.ModelName = 'PyModbus Server'
identity.MajorMinorRevision = '3.11.1'

# Start server with identity
StartTcpServer(
    context=server_context,
    identity=identity,
    address=('127.0.0.1', 502)
)
"""

ASYNC_TCP = """
import asyncio
from pymodbus.server import StartAsyncTcpServer, ServerAsyncStop
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext

async def run_async_server():
    # Create data store
    store = ModbusSequentialDataBlock(0, list(range(100)))
    context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
    server_context = ModbusServerContext(device_default=context, single=True)

    # Start async server
    server = await StartAsyncTcpServer(
        context=server_context,
        address=('127.0.0.1', 5020)
    )

    try:
        # Server runs until interrupted
        await asyncio.Event().wait()
    except KeyboardInterrupt:
        print("Server interrupted, shutting down...")
    finally:
        await ServerAsyncStop()

# Run async server
asyncio.run(run_async_server())
"""

SERIAL = """
from pymodbus.server import StartSerialServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext
from pymodbus import FramerType

# Create data store
store = ModbusSequentialDataBlock(0, [0] * 100)
context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
server_context = ModbusServerContext(device_default=context, single=True)

# Start serial server
StartSerialServer(
    context=server_context,
    port='/dev/ttyUSB0', # Linux
    # port='COM1', # Windows
    framer=FramerType.RTU,
    baudrate=9600,
    bytesize=8,
    parity='N',
    stopbits=1,
    timeout=1
)
"""

CUSTOM = """
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext
from pymodbus.pdu import ModbusPDU
from pymodbus import ModbusDeviceIdentification

# Define custom function
class CustomFunction(ModbusPDU):
    function_code = 0x40 # Custom function code

    def __init__(self, **kwargs):
        ModbusPDU.__init__(self, **kwargs)

    def encode(self):
        return b''

    def decode(self, data):
        pass

    def execute(self, context):
        # Custom function logic
        return CustomFunctionResponse()

class CustomFunctionResponse(ModbusPDU):
    function_code = 0x40

    def __init__(self, **kwargs):
        ModbusPDU.__init__(self, **kwargs)

    def encode(self):
        return b'Custom response'

# Create server context
store = ModbusSequentialDataBlock(0, [0] * 100)
context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
server_context = ModbusServerContext(device_default=context, single=True)

# Start server with custom function
StartTcpServer(
    context=server_context,
    custom_functions=[CustomFunction],
    address=('127.0.0.1', 502)
)
"""

TLS = """
import ssl
from pymodbus.server import StartTlsServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext

# Create SSL context
ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ssl_context.load_cert_chain(certfile="server.crt", keyfile="server.key")

# Create data store
store = ModbusSequentialDataBlock(0, [0] * 100)
context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
server_context = ModbusServerContext(device_default=context, single=True)

# Start TLS server
StartTlsServer(
    context=server_context,
    sslctx=ssl_context,
    address=('127.0.0.1', 802)
)
"""

SIMULATOR = """
import asyncio
from pymodbus.server import ModbusSimulatorServer

async def run_simulator():
    # Create simulator server
    simulator = ModbusSimulatorServer(
        http_host="localhost",
        http_port=8080,
        json_file="simulation_config.json"
    )

    try:
        # Start simulator (includes HTTP interface)
        await simulator.run_forever()
    except KeyboardInterrupt:
        print("Stopping simulator...")
        simulator.stop()

# Run simulator
asyncio.run(run_simulator())
"""

OPTIONS = """
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusDeviceContext

# Create data store
store = ModbusSequentialDataBlock(0, [0] * 100)
context = ModbusDeviceContext(co=store, di=store, hr=store, ir=store)
server_context = ModbusServerContext(device_default=context, single=True)

# Start server with various configuration options
StartTcpServer(
    context=server_context,
    address=('0.0.0.0', 502),
    allow_reuse_address=True,
    allow_reuse_port=True,
    defer_start=False,
    backlog=20,
    ignore_missing_slaves=True,
    broadcast_enable=False,
    timeout=1
)
"""

# asyncio.run re-raises Ctrl-C after the example's own clean-up: the process ends by SIGINT.
ASYNC_EXITS = [0, 130, -2]


@needs_netns
def test_simple_tcp_server(tmp_path):
    run_example(tmp_path, SIMPLE_TCP, {"kind": "tcp", "port": 5020, "reads": [[1, 0, 3, [0, 0, 0]]]})


@needs_netns
def test_multi_device_server(tmp_path):
    reads = [[1, 0, 2, [20, 30]], [2, 1, 3, [300, 400, 500]]]
    run_example(tmp_path, MULTI_DEVICE, {"kind": "tcp", "port": 502, "reads": reads})


@needs_netns
def test_server_with_device_identity(tmp_path):
    spec = {"kind": "tcp", "port": 502, "reads": [], "identity": [[0, "PyModbus"], [1, "PM"], [2, "3.11.1"],
                                                                    [4, "PyModbus Server"]]}
    run_example(tmp_path, IDENTITY, spec)


@needs_netns
def test_async_tcp_server(tmp_path):
    spec = {"kind": "tcp", "port": 5020, "reads": [[1, 0, 3, [1, 2, 3]]], "exit_codes": ASYNC_EXITS}
    run_example(tmp_path, ASYNC_TCP, spec)


@needs_netns
def test_custom_function_server(tmp_path):
    run_example(tmp_path, CUSTOM, {"kind": "raw", "port": 502, "request": "40", "answer": "40" + b"Custom response".hex()})


@needs_netns
def test_tls_server(tmp_path, pki):
    for name in ("server.crt", "server.key"):
        shutil.copy(pki / name, tmp_path / name)
    spec = {"kind": "tls", "port": 802, "cafile": str(pki / "ca.crt"), "reads": [[1, 0, 2, [0, 0]]]}
    run_example(tmp_path, TLS, spec)


@needs_netns
def test_server_configuration_options(tmp_path):
    run_example(tmp_path, OPTIONS, {"kind": "tcp", "port": 502, "reads": [[7, 10, 2, [0, 0]]]})


@needs_netns
def test_simulator_server(tmp_path):
    default = (HERE / ".." / ".." / "crates" / "coilwork-sim" / "src" / "default.json").read_text()
    (tmp_path / "simulation_config.json").write_text(default)
    spec = {"kind": "sim", "port": 5020, "http": 8080, "reads": [[1, 20, 2, None]], "exit_codes": ASYNC_EXITS}
    run_example(tmp_path, SIMULATOR, spec)


def test_serial_server_example(tmp_path):
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    tty, client = tmp_path / "ttyUSB0", tmp_path / "client"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={tty}", f"pty,raw,echo=0,link={client}"])
    try:
        deadline = time.monotonic() + 10
        while not (tty.exists() and client.exists()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        source = SERIAL.replace("/dev/ttyUSB0", str(tty))
        example = tmp_path / "example.py"
        example.write_text(as_coilwork(source))
        spec = {"kind": "serial", "tty": str(client), "expect": [0, 0]}
        cmd = [sys.executable, str(HERE / "examples_harness.py"), str(example), json.dumps(spec)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        proc.terminate()
        proc.wait(5)
