"""Custom function codes (ModbusPDU subclasses) and the UDP server."""

import asyncio
import logging
import socket
import struct

import pytest
from conftest import raw_request, running, single_context, tcp_server

from coilwork.pdu import ExceptionResponse, ModbusPDU
from coilwork.server import ModbusUdpServer


class Echo(ModbusPDU):
    """0x41: answers the device id, the request's bytes reversed, and a register read through the context."""

    function_code = 0x41

    def decode(self, data):
        self.data = data

    def execute(self, context):
        return EchoResponse(self.data[::-1] + bytes(context.getValues(3, 0, 1)) + bytes([self.dev_id]))


class EchoResponse(ModbusPDU):
    function_code = 0x41

    def __init__(self, payload=b"", **kwargs):
        super().__init__(**kwargs)
        self.payload = payload

    def encode(self):
        return self.payload


class Slow(ModbusPDU):
    """0x42: a coroutine execute."""

    function_code = 0x42

    async def execute(self, context):
        await asyncio.sleep(0.01)
        response = EchoResponse(b"async")
        response.function_code = 0x42
        return response


class Failing(ModbusPDU):
    function_code = 0x43

    def execute(self, context):
        raise KeyError("no such thing")


class Refusing(ModbusPDU):
    function_code = 0x44

    def execute(self, context):
        return ExceptionResponse(0x44, 3)


@pytest.fixture
def custom_port():
    _, context = single_context()
    with tcp_server(context, custom_functions=[Echo, Slow, Failing, Refusing]) as server:
        yield server.address[1]


def test_custom_function_uses_decode_execute_encode(custom_port):
    assert raw_request(custom_port, 7, bytes([0x41, 1, 2, 3])) == bytes([0x41, 3, 2, 1, 1, 7])


def test_custom_function_coroutine(custom_port):
    assert raw_request(custom_port, 1, bytes([0x42])) == bytes([0x42]) + b"async"


def test_custom_function_exception_answers_04_and_logs(custom_port, caplog):
    with caplog.at_level(logging.ERROR, logger="coilwork"):
        assert raw_request(custom_port, 1, bytes([0x43])) == bytes([0xC3, 4])
    assert any("0x43" in r.getMessage() for r in caplog.records if r.name == "coilwork")
    # The server goes on.
    assert raw_request(custom_port, 1, bytes([0x42])) == bytes([0x42]) + b"async"


def test_custom_function_exception_response(custom_port):
    assert raw_request(custom_port, 1, bytes([0x44])) == bytes([0xC4, 3])


def test_custom_pdu_keyword_and_public_code_refused():
    _, context = single_context()
    with tcp_server(context, custom_pdu=[Echo]) as server:
        assert raw_request(server.address[1], 1, bytes([0x41, 9]))[:2] == bytes([0x41, 9])

    class Taken(ModbusPDU):
        function_code = 3

        def execute(self, context):
            return None

    with pytest.raises(ValueError, match="custom function"):
        tcp_server(context, custom_functions=[Taken]).__enter__()


def test_udp_with_pymodbus_client():
    from pymodbus.client import ModbusUdpClient

    store, context = single_context()
    with running(ModbusUdpServer(context, address=("127.0.0.1", 0))) as server:
        client = ModbusUdpClient("127.0.0.1", port=server.address[1], timeout=2, retries=1)
        assert client.connect()
        try:
            assert client.read_holding_registers(0, count=3).registers == [1, 2, 3]
            assert not client.write_register(0, 77).isError()
            assert store.getValues(1) == [77]
        finally:
            client.close()


def test_udp_raw_datagram_and_garbage_is_dropped():
    _, context = single_context()
    with running(ModbusUdpServer(context, address=("127.0.0.1", 0))) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"\x00\x01garbage", ("127.0.0.1", server.address[1]))
            sock.sendto(struct.pack(">HHHB", 5, 0, 6, 1) + bytes([4, 0, 0, 0, 2]), ("127.0.0.1", server.address[1]))
            answer, _ = sock.recvfrom(300)
            assert answer == struct.pack(">HHHB", 5, 0, 7, 1) + bytes([4, 4, 0, 1, 0, 2])


def test_udp_port_in_use_raises_oserror():
    _, context = single_context()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        server = ModbusUdpServer(context, address=("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(OSError):
            server._start()
