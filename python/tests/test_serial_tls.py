"""The serial server on a socat pty pair, and TLS (Python SSLContext and rustls)."""

import asyncio
import os
import shutil
import ssl
import subprocess
import time

import pytest
from conftest import running, single_context

from coilwork import FramerType
from coilwork.server import (
    ModbusSerialServer,
    ModbusTlsServer,
    ServerAsyncStop,
    StartAsyncSerialServer,
    StartAsyncTlsServer,
)

need_socat = pytest.mark.skipif(
    shutil.which("socat") is None and not os.environ.get("COILWORK_REQUIRE_CLIENTS"), reason="socat not installed"
)


@pytest.fixture
def pty_pair(tmp_path):
    """Two linked pseudo-terminals (server end, client end) made by socat."""
    server_end, client_end = str(tmp_path / "server"), str(tmp_path / "client")
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={server_end}", f"pty,raw,echo=0,link={client_end}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (os.path.exists(server_end) and os.path.exists(client_end)):
        assert time.monotonic() < deadline, "socat made no pty pair"
        time.sleep(0.02)
    yield server_end, client_end
    proc.terminate()
    proc.wait(5)


def _serial_client(port, framer):
    from pymodbus.client import ModbusSerialClient

    client = ModbusSerialClient(port, framer=framer, baudrate=19200, timeout=2, retries=1)
    assert client.connect()
    return client


@need_socat
@pytest.mark.parametrize("framer", [FramerType.RTU, FramerType.ASCII])
def test_serial_server_on_a_pty_pair(pty_pair, framer):
    server_end, client_end = pty_pair
    store, context = single_context()
    server = ModbusSerialServer(context, framer=framer, port=server_end, baudrate=19200)
    with running(server):
        client = _serial_client(client_end, framer.value)
        try:
            assert client.read_holding_registers(0, count=3, device_id=1).registers == [1, 2, 3]
            assert not client.write_registers(5, [55, 56], device_id=1).isError()
            assert store.getValues(6, 2) == [55, 56]
        finally:
            client.close()


@need_socat
def test_start_async_serial_server(pty_pair):
    server_end, client_end = pty_pair

    async def main():
        _, context = single_context()
        await StartAsyncSerialServer(context=context, port=server_end, framer=FramerType.RTU, baudrate=9600)
        client = _serial_client(client_end, "rtu")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: client.read_input_registers(3, count=2, device_id=1).registers
            )
        finally:
            client.close()
            await ServerAsyncStop()

    assert asyncio.run(main()) == [4, 5]


def test_serial_missing_port_raises_oserror(tmp_path):
    _, context = single_context()
    server = ModbusSerialServer(context, port=str(tmp_path / "no-such-tty"))
    with pytest.raises(OSError, match="no-such-tty"):
        server._start()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"port": None}, "port"), ({"parity": "X"}, "parity"), ({"framer": FramerType.SOCKET}, "RTU"),
     ({"baudrate": 0}, "baudrate")],
)
def test_serial_bad_arguments(kwargs, message):
    _, context = single_context()
    kwargs = {"port": "/dev/null", **kwargs}
    with pytest.raises(ValueError, match=message):
        ModbusSerialServer(context, **kwargs)


# -- TLS ------------------------------------------------------------------


def _tls_client(port, pki, with_cert=False):
    from pymodbus.client import ModbusTlsClient

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    # pymodbus wraps without a server name: the CA chain is still verified.
    ctx.check_hostname = False
    if with_cert:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    client = ModbusTlsClient("127.0.0.1", port=port, sslctx=ctx, timeout=2, retries=0)
    assert client.connect()
    return client


def _server_sslctx(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=str(pki / "server.crt"), keyfile=str(pki / "server.key"))
    return ctx


def test_tls_with_python_sslcontext(pki):
    store, context = single_context()
    server = ModbusTlsServer(context, address=("127.0.0.1", 0), sslctx=_server_sslctx(pki))
    with running(server):
        client = _tls_client(server.address[1], pki)
        try:
            assert client.read_holding_registers(0, count=2).registers == [1, 2]
            assert not client.write_register(2, 222).isError()
            assert store.getValues(3) == [222]
        finally:
            client.close()


def test_tls_with_certfile_and_keyfile(pki):
    _, context = single_context()
    server = ModbusTlsServer(
        context, address=("127.0.0.1", 0), certfile=str(pki / "server.crt"), keyfile=str(pki / "server.key")
    )
    with running(server):
        client = _tls_client(server.address[1], pki)
        try:
            assert client.read_input_registers(10, count=2).registers == [11, 12]
        finally:
            client.close()


def test_rust_warnings_reach_python_logging(pki, caplog):
    import logging

    _, context = single_context()
    server = ModbusTlsServer(
        context, address=("127.0.0.1", 0), certfile=str(pki / "server.crt"), keyfile=str(pki / "server.key")
    )
    with caplog.at_level(logging.WARNING, logger="coilwork"):
        with running(server):
            deadline = time.monotonic() + 5
            while not any("not Modbus/TCP Security" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                time.sleep(0.02)
    record = next(r for r in caplog.records if "not Modbus/TCP Security" in r.getMessage())
    assert record.name == "coilwork" and record.levelno == logging.WARNING


def test_mbaps_client_certificate_required(pki):
    _, context = single_context()
    server = ModbusTlsServer(
        context,
        address=("127.0.0.1", 0),
        certfile=str(pki / "server.crt"),
        keyfile=str(pki / "server.key"),
        cafile=str(pki / "ca.crt"),
    )
    with running(server):
        client = _tls_client(server.address[1], pki, with_cert=True)
        try:
            assert client.read_holding_registers(0, count=1).registers == [1]
        finally:
            client.close()
        from pymodbus.client import ModbusTlsClient

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
        ctx.check_hostname = False
        anonymous = ModbusTlsClient("127.0.0.1", port=server.address[1], sslctx=ctx, timeout=1, retries=0)
        served = False
        try:
            if anonymous.connect():
                served = not anonymous.read_holding_registers(0, count=1).isError()
        except Exception:  # pymodbus raises ConnectionException when the handshake is refused
            served = False
        finally:
            anonymous.close()
        assert not served, "a client without a certificate was served"


def test_start_async_tls_server_with_sslctx(pki):
    async def main():
        _, context = single_context()
        server = await StartAsyncTlsServer(context=context, address=("127.0.0.1", 0), sslctx=_server_sslctx(pki))
        client = _tls_client(server.address[1], pki)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: client.read_holding_registers(5, count=1).registers
            )
        finally:
            client.close()
            await ServerAsyncStop()

    assert asyncio.run(main()) == [6]


def test_tls_errors(pki, tmp_path):
    import socket

    _, context = single_context()
    with pytest.raises(ValueError, match="sslctx"):
        ModbusTlsServer(context, address=("127.0.0.1", 0))
    with pytest.raises(ValueError):
        ModbusTlsServer(context, address=("127.0.0.1", 0), certfile=str(tmp_path / "x.crt"), keyfile="y.key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ModbusTlsServer(context, address=("127.0.0.1", taken.getsockname()[1]), sslctx=_server_sslctx(pki))
        with pytest.raises(OSError):
            server._start()


# -- TLS connection timeouts (the same as the Rust servers') ----------------

#: FC3, address 0, count 1, as an MBAP request to unit 1 (transaction 7).
_FC3 = bytes.fromhex("000700000006" "01" "03" "0000" "0001")


def _raw_tls(port, pki):
    """A TLS socket to the server, handshake done."""
    import socket

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    ctx.check_hostname = False
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    sock.settimeout(10)
    return sock


def _ask_fc3(sock):
    sock.sendall(_FC3)
    answer = b""
    while len(answer) < 11:
        chunk = sock.recv(64)
        assert chunk, "closed instead of answering"
        answer += chunk
    assert answer == bytes.fromhex("0007000000050103020001")


def _seconds_until_closed(sock):
    """Waits (at most 10 s) for the server to close; returns how long that took."""
    start = time.monotonic()
    try:
        data = sock.recv(64)
    except (ssl.SSLError, ConnectionError):
        data = b""
    assert data == b"", f"the server sent {data!r} instead of closing"
    return time.monotonic() - start


def _tls_server(pki, how, **timeouts):
    _, context = single_context()
    if how == "sslctx":
        keys = {"sslctx": _server_sslctx(pki)}
    else:
        keys = {"certfile": str(pki / "server.crt"), "keyfile": str(pki / "server.key")}
    return ModbusTlsServer(context, address=("127.0.0.1", 0), **keys, **timeouts)


@pytest.mark.parametrize("how", ["sslctx", "certfile"])
def test_tls_idle_timeout_closes_a_silent_client(pki, how):
    with running(_tls_server(pki, how, idle_timeout=1.0, partial_frame_timeout=None)) as server:
        sock = _raw_tls(server.address[1], pki)
        with sock:
            # Requests more often than the idle timeout keep the connection open past it.
            for i in range(7):
                time.sleep(0.2 if i else 0)
                _ask_fc3(sock)
            waited = _seconds_until_closed(sock)
        # Counted from the last request, never earlier; 10 s means never.
        assert 0.8 <= waited < 9, waited


@pytest.mark.parametrize("how", ["sslctx", "certfile"])
def test_tls_partial_frame_timeout_drops_the_connection(pki, how):
    with running(_tls_server(pki, how, idle_timeout=None, partial_frame_timeout=0.5)) as server:
        sock = _raw_tls(server.address[1], pki)
        with sock:
            # No partial frame: quiet for longer than the timeout is fine.
            time.sleep(0.8)
            _ask_fc3(sock)
            sock.sendall(_FC3[:5])
            waited = _seconds_until_closed(sock)
        assert 0.4 <= waited < 9, waited


def test_tls_timeouts_are_checked(pki):
    with pytest.raises(ValueError, match="idle_timeout"):
        _tls_server(pki, "sslctx", idle_timeout=-1)
    with pytest.raises(ValueError, match="partial_frame_timeout"):
        _tls_server(pki, "certfile", partial_frame_timeout=0)
