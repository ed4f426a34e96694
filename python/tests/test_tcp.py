"""The TCP server over real sockets, checked with pymodbus 3.16.1's client."""

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import raw_request, running, single_context, tcp_client, tcp_server

from coilwork import FramerType, ModbusDeviceIdentification
from coilwork.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from coilwork.server import (
    ModbusTcpServer,
    ServerAsyncStop,
    ServerStop,
    StartAsyncTcpServer,
    StartTcpServer,
)


def test_reads_every_table(shared):
    _, _, client = shared
    # zero_mode=False: protocol address 0 is block address 1.
    assert client.read_holding_registers(0, count=3).registers == [1, 2, 3]
    assert client.read_input_registers(10, count=2).registers == [11, 12]
    assert client.read_coils(0, count=3).bits[:3] == [True, True, True]
    assert client.read_discrete_inputs(98, count=1).bits[0] is True


def test_writes_reach_the_block(shared):
    store, _, client = shared
    assert not client.write_register(4, 500).isError()
    assert not client.write_registers(10, [7, 8, 9]).isError()
    assert store.getValues(5) == [500]
    assert store.getValues(11, 3) == [7, 8, 9]


def test_one_store_for_several_tables(shared):
    store, _, client = shared
    client.write_coils(20, [False, True])
    assert store.getValues(21, 2) == [0, 1]
    assert client.read_holding_registers(20, count=2).registers == [0, 1]


def test_mask_write_and_read_write(shared):
    store, _, client = shared
    store.setValues(1, [0x12])
    assert not client.mask_write_register(address=0, and_mask=0xF2, or_mask=0x25).isError()
    assert store.getValues(1) == [(0x12 & 0xF2) | (0x25 & ~0xF2 & 0xFFFF)]
    rr = client.readwrite_registers(read_address=30, read_count=2, write_address=30, values=[5, 6])
    assert rr.registers == [5, 6]


def test_out_of_range_is_exception_02(shared):
    _, _, client = shared
    rr = client.read_holding_registers(99, count=2)
    assert rr.isError() and rr.exception_code == 2
    assert raw_request(shared[1].address[1], 1, bytes([3, 0, 99, 0, 1])) == bytes([0x83, 2])


def test_zero_mode_true_reads_block_address_zero():
    _, context = single_context(zero_mode=True)
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(0, count=2).registers == [0, 1]


def test_ten_thousand_addresses_with_10001_values():
    block = ModbusSequentialDataBlock(0, [7] * 10001)
    context = ModbusServerContext(device_default=ModbusDeviceContext(hr=block), single=True)
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(9990, count=10).registers == [7] * 10


def test_multi_device_ids_and_missing_device():
    one = ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [10, 20, 30, 40, 50]))
    two = ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [100, 200, 300, 400, 500]))
    context = ModbusServerContext(single=False)
    context[1], context[2] = one, two
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(0, count=2, device_id=1).registers == [20, 30]
        assert client.read_holding_registers(0, count=2, device_id=2).registers == [200, 300]
        assert raw_request(server.address[1], 3, bytes([3, 0, 0, 0, 1])) == bytes([0x83, 0x0B])
        # A device added while serving answers at once.
        context[3] = ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [0, 33]))
        assert client.read_holding_registers(0, count=1, device_id=3).registers == [33]
        del context[1]
        assert raw_request(server.address[1], 1, bytes([3, 0, 0, 0, 1])) == bytes([0x83, 0x0B])


def test_ignore_missing_devices_sends_nothing():
    context = ModbusServerContext(single=False)
    context[1] = ModbusDeviceContext()
    with tcp_server(context, ignore_missing_devices=True) as server:
        assert raw_request(server.address[1], 9, bytes([3, 0, 0, 0, 1]), timeout=0.5) is None
        assert raw_request(server.address[1], 1, bytes([3, 0, 0, 0, 1])) == bytes([3, 2, 0, 0])


def test_updating_server_sees_setvalues_at_once(shared):
    store, server, client = shared
    context = server.context
    for value in range(1, 20):
        context[0].setValues(3, 40, [value] * 5)
        assert client.read_holding_registers(40, count=5).registers == [value] * 5


def test_one_setvalues_is_never_seen_half_done(shared):
    store, server, _ = shared
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            n = (n + 1) % 60000
            store.setValues(50, [n] * 40)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with tcp_client(server.address[1]) as client:
            for _ in range(200):
                regs = client.read_holding_registers(49, count=40).registers
                assert len(set(regs)) == 1, regs
    finally:
        stop.set()
        thread.join()


class Recording(ModbusSequentialDataBlock):
    """pymodbus's callback-server pattern: a block that sees every write."""

    def __init__(self, *args):
        super().__init__(*args)
        self.writes = []

    def setValues(self, address, values):
        self.writes.append((address, list(values)))
        super().setValues(address, values)


def test_subclass_setvalues_is_called():
    block = Recording(0, [0] * 20)
    context = ModbusServerContext(device_default=ModbusDeviceContext(hr=block), single=True)
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        client.write_registers(2, [5, 6])
        client.write_register(0, 9)
        assert block.writes == [(3, [5, 6]), (1, [9])]
        assert client.read_holding_registers(0, count=4).registers == [9, 0, 5, 6]


class Doubling(ModbusSequentialDataBlock):
    def getValues(self, address, count=1):
        return [2 * v for v in super().getValues(address, count)]


def test_subclass_getvalues_is_served():
    context = ModbusServerContext(
        device_default=ModbusDeviceContext(hr=Doubling(0, [1, 2, 3]), zero_mode=True), single=True
    )
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(0, count=3).registers == [2, 4, 6]


class Broken(ModbusSequentialDataBlock):
    def setValues(self, address, values):
        raise RuntimeError("disk full")


def test_python_exception_answers_04_and_is_logged(caplog):
    context = ModbusServerContext(device_default=ModbusDeviceContext(hr=Broken(0, [0] * 10)), single=True)
    with caplog.at_level(logging.ERROR, logger="coilwork"):
        with tcp_server(context) as server, tcp_client(server.address[1]) as client:
            rr = client.write_register(1, 5)
            assert rr.isError() and rr.exception_code == 4
            # The server goes on.
            assert client.read_holding_registers(1, count=1).registers == [0]
    records = [r for r in caplog.records if r.name == "coilwork"]
    assert records and "disk full" in str(records[0].exc_info[1])


def test_identity_fc43_and_fc17():
    _, context = single_context()
    identity = ModbusDeviceIdentification()
    identity.VendorName = "Coil Works"
    identity.ProductCode = "CW"
    identity.MajorMinorRevision = "1.2"
    identity.ProductName = "coilwork from Python"
    with tcp_server(context, identity=identity) as server, tcp_client(server.address[1]) as client:
        rr = client.read_device_information(read_code=2)
        assert rr.information[0] == b"Coil Works"
        assert rr.information[1] == b"CW"
        assert rr.information[4] == b"coilwork from Python"
        pdu = raw_request(server.address[1], 1, bytes([0x11]))
        assert pdu[0] == 0x11


def test_rtu_framing_over_tcp():
    from pymodbus.client import ModbusTcpClient

    _, context = single_context()
    with tcp_server(context, framer=FramerType.RTU) as server:
        client = ModbusTcpClient("127.0.0.1", port=server.address[1], framer=FramerType.RTU.value, timeout=2)
        assert client.connect()
        try:
            assert client.read_holding_registers(0, count=2).registers == [1, 2]
        finally:
            client.close()


def test_port_in_use_raises_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _, context = single_context()
        server = ModbusTcpServer(context, address=("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(OSError, match="in use"):
            server.serve_forever()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"address": "localhost"}, ValueError, "tuple"),
        ({"address": ("127.0.0.1", 70000)}, ValueError, "port"),
        ({"framer": "modbus"}, ValueError, "FramerType"),
        ({"backlog": 0}, ValueError, "backlog"),
        ({"identity": "me"}, TypeError, "ModbusDeviceIdentification"),
        ({"custom_functions": [object]}, TypeError, "ModbusPDU"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_arguments_raise_before_listening(kwargs, error, message):
    _, context = single_context()
    kwargs.setdefault("address", ("127.0.0.1", 0))
    with pytest.raises(error, match=message):
        ModbusTcpServer(context, **kwargs)


def test_bad_context_raises():
    with pytest.raises(TypeError, match="ModbusServerContext"):
        ModbusTcpServer({"hr": []}, address=("127.0.0.1", 0))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_tcp_server_blocks_until_server_stop():
    _, context = single_context()
    port = _free_port()
    thread = threading.Thread(target=StartTcpServer, kwargs={"context": context, "address": ("127.0.0.1", port)})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with tcp_client(port) as client:
                    # The GIL is released while serving: this thread runs.
                    assert client.read_holding_registers(0, count=1).registers == [1]
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert thread.is_alive()
    finally:
        ServerStop()
        thread.join(10)
    assert not thread.is_alive()


def test_gil_is_released_while_serving():
    _, context = single_context()
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    counted = []

    def count():
        n = 0
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            n += 1
        counted.append(n)

    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        counter = threading.Thread(target=count)
        counter.start()
        counter.join(5)
        assert counted and counted[0] > 1000
    finally:
        server.shutdown()
        thread.join(10)
    assert not thread.is_alive()


def test_ctrl_c_stops_start_tcp_server_cleanly(tmp_path):
    port = _free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from coilwork.server import StartTcpServer
            StartTcpServer(address=("127.0.0.1", {port}))
            print("returned", flush=True)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "returned" in out
    assert "Traceback" not in err


def test_async_start_and_server_async_stop():
    async def main():
        _, context = single_context()
        server = await StartAsyncTcpServer(context=context, address=("127.0.0.1", 0))
        port = server.address[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes([0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1]))
        answer = await asyncio.wait_for(reader.readexactly(11), 5)
        writer.close()
        await ServerAsyncStop()
        return answer, port

    answer, port = asyncio.run(main())
    assert answer[7:] == bytes([3, 2, 0, 1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_await_serve_forever_and_shutdown():
    async def main():
        _, context = single_context()
        server = ModbusTcpServer(context, address=("127.0.0.1", 0))
        task = asyncio.ensure_future(server.serve_forever())
        while server.address is None:
            await asyncio.sleep(0.01)
        assert not task.done()
        await server.shutdown()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_serve_forever_background():
    async def main():
        _, context = single_context()
        server = ModbusTcpServer(context, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        assert server.address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(bytes([0, 9, 0, 0, 0, 6, 1, 4, 0, 4, 0, 1]))
        answer = await asyncio.wait_for(reader.readexactly(11), 5)
        writer.close()
        await server.shutdown()
        return answer

    assert asyncio.run(main())[7:] == bytes([4, 2, 0, 5])


def test_pymodbus_async_client_many_connections(shared):
    from pymodbus.client import AsyncModbusTcpClient

    port = shared[1].address[1]

    async def one(i):
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
        await client.connect()
        try:
            for _ in range(20):
                rr = await client.read_holding_registers(i, count=2)
                assert rr.registers == [i + 1, i + 2]
        finally:
            client.close()

    async def main():
        await asyncio.gather(*(one(i) for i in range(10)))

    asyncio.run(main())


def test_server_close_before_serving_releases_the_port():
    _, context = single_context()
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    server._start()
    port = server.address[1]
    server.server_close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_validate_device_id():
    _, context = single_context()
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    assert server.validate_device_id(7)
    assert os.environ is not None


def test_interpreter_exits_with_a_server_still_running(tmp_path):
    script = tmp_path / "leave.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from coilwork.server import StartAsyncTcpServer
            from coilwork.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

            class Hooked(ModbusSequentialDataBlock):
                def setValues(self, address, values):
                    super().setValues(address, values)

            async def main():
                device = ModbusDeviceContext(hr=Hooked(0, [0] * 10))
                await StartAsyncTcpServer(context=ModbusServerContext(device_default=device, single=True),
                                          address=("127.0.0.1", 0))

            asyncio.run(main())
            print("leaving", flush=True)
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "leaving" in result.stdout


class RecordingDevice(ModbusDeviceContext):
    """A device context subclass that sees every request (pymodbus's other callback pattern)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def getValues(self, fx, address, count=1):
        self.calls.append(("get", fx, address, count))
        return super().getValues(fx, address, count)

    def setValues(self, fx, address, values):
        self.calls.append(("set", fx, address, list(values)))
        super().setValues(fx, address, values)


def test_device_context_subclass_is_called_with_function_codes():
    hr = ModbusSequentialDataBlock(0, [0, 1, 2, 3, 4])
    device = RecordingDevice(hr=hr)
    context = ModbusServerContext(device_default=device, single=True)
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(1, count=2).registers == [2, 3]
        assert not client.write_registers(0, [9, 8]).isError()
        # Coils not given: a zeroed 65536-value block of their own.
        assert client.read_coils(0, count=1).bits[0] is False
    assert device.calls == [("get", 3, 1, 2), ("set", 16, 0, [9, 8]), ("get", 1, 0, 1)]
    assert hr.getValues(1, 2) == [9, 8]


class FunctionCodeDevice(ModbusDeviceContext):
    """Records the function code of every validate / getValues / setValues, as pymodbus passes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def validate(self, fx, address, count=1):
        self.calls.append(("validate", fx, address, count))
        return super().validate(fx, address, count)

    def getValues(self, fx, address, count=1):
        self.calls.append(("get", fx, address, count))
        return super().getValues(fx, address, count)

    def setValues(self, fx, address, values):
        self.calls.append(("set", fx, address, [int(v) for v in values]))
        super().setValues(fx, address, values)


@pytest.mark.parametrize(
    "request_, fx, expected",
    [
        (lambda c: c.write_coil(3, True), 5, [("set", 5, 3, [1])]),
        (lambda c: c.write_register(4, 77), 6, [("set", 6, 4, [77])]),
        (lambda c: c.write_coils(5, [True, False, True]), 15, [("set", 15, 5, [1, 0, 1])]),
        (lambda c: c.write_registers(6, [7, 8]), 16, [("set", 16, 6, [7, 8])]),
        # FC22 reads the register, then writes (0x12 & 0xF2) | (0x25 & ~0xF2).
        (lambda c: c.mask_write_register(address=9, and_mask=0xF2, or_mask=0x25), 22,
         [("get", 22, 9, 1), ("set", 22, 9, [0x12 & 0xF2 | 0x25 & ~0xF2 & 0xFFFF])]),
        # FC23 writes first, then reads.
        (lambda c: c.readwrite_registers(read_address=20, read_count=2, write_address=10, values=[5, 6]), 23,
         [("set", 23, 10, [5, 6]), ("get", 23, 20, 2)]),
    ],
    ids=["fc5", "fc6", "fc15", "fc16", "fc22", "fc23"],
)
def test_device_context_override_sees_the_request_function_code(request_, fx, expected):
    # zero_mode=False: protocol address 9 is block address 10.
    hr = ModbusSequentialDataBlock(0, [0] * 10 + [0x12] + [0] * 30)
    device = FunctionCodeDevice(hr=hr, co=ModbusSequentialDataBlock(0, [False] * 40))
    context = ModbusServerContext(device_default=device, single=True)
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        response = request_(client)
        assert not response.isError(), response
    assert {call[1] for call in device.calls} == {fx}, device.calls
    assert [c for c in device.calls if c[0] != "validate"] == expected
    # Every access was validated just before, with the same function code and range.
    for i, (op, code, address, arg) in enumerate(device.calls):
        if op != "validate":
            assert i > 0 and device.calls[i - 1] == ("validate", code, address, arg if op == "get" else len(arg))


class OnlyUnitSeven(ModbusTcpServer):
    """A server subclass that answers device id 7 only."""

    def validate_device_id(self, device_id):
        self.asked = getattr(self, "asked", []) + [device_id]
        return device_id == 7


def test_validate_device_id_override_is_called_per_request():
    _, context = single_context()
    with running(OnlyUnitSeven(context, address=("127.0.0.1", 0))) as server:
        port = server.address[1]
        assert raw_request(port, 7, bytes.fromhex("0300000001")) == bytes.fromhex("03020001")
        # Refused: what a missing device gets on TCP (exception 0x0B).
        assert raw_request(port, 8, bytes.fromhex("0300000001")) == bytes.fromhex("830b")
    assert server.asked == [7, 8]


def test_validate_device_id_refusal_with_ignore_missing_devices_is_silent():
    _, context = single_context()
    with running(OnlyUnitSeven(context, address=("127.0.0.1", 0), ignore_missing_devices=True)) as server:
        assert raw_request(server.address[1], 9, bytes.fromhex("0300000001"), timeout=0.5) is None


class Intercepting(ModbusTcpServer):
    """A server subclass that answers FC6 to address 99 itself and logs the rest."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def process_request(self, request, client):
        self.seen.append((request.function_code, request.dev_id, request.address, request.count,
                          list(request.registers), client[0]))
        if request.function_code == 6 and request.address == 99:
            return request.pdu  # echo, without touching the store
        if request.function_code == 3 and request.address == 98:
            raise RuntimeError("refused by process_request")
        return super().process_request(request, client)


def test_process_request_override_sees_and_may_answer_every_request(caplog):
    store, context = single_context()
    with running(Intercepting(context, address=("127.0.0.1", 0))) as server, tcp_client(server.address[1]) as client:
        assert client.read_holding_registers(1, count=2, device_id=3).registers == [2, 3]
        assert not client.write_registers(4, [40, 41]).isError()
        assert not client.write_register(99, 5).isError()
        with caplog.at_level(logging.ERROR, logger="coilwork"):
            assert client.read_holding_registers(98, count=1).exception_code == 4
    assert "process_request raised" in caplog.text
    assert server.seen == [
        (3, 3, 1, 2, [], "127.0.0.1"),
        (16, 1, 4, 2, [40, 41], "127.0.0.1"),
        (6, 1, 99, 1, [5], "127.0.0.1"),
        (3, 1, 98, 1, [], "127.0.0.1"),
    ]
    # Executed by the engine: written; answered by the override: not.
    assert store.getValues(5, 2) == [40, 41]

