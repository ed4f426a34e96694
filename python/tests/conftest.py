"""Shared fixtures: servers on free ports and pymodbus 3.16.1 clients."""

import contextlib
import subprocess
import socket
import struct

import pytest

from coilwork.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from coilwork.server import ModbusTcpServer


def single_context(values=None, zero_mode=False):
    """One shared block of ``values`` (default 0..99) for every table and every device id."""
    store = ModbusSequentialDataBlock(0, list(range(100)) if values is None else values)
    device = ModbusDeviceContext(co=store, di=store, hr=store, ir=store, zero_mode=zero_mode)
    return store, ModbusServerContext(device_default=device, single=True)


@contextlib.contextmanager
def running(server):
    """Starts ``server`` in the background (bound to the port it was given) and stops it after."""
    server._start()
    try:
        yield server
    finally:
        server.shutdown()


@contextlib.contextmanager
def tcp_server(context, **kwargs):
    """A TCP server on a free port of 127.0.0.1."""
    with running(ModbusTcpServer(context, address=("127.0.0.1", 0), **kwargs)) as server:
        yield server


@contextlib.contextmanager
def tcp_client(port, **kwargs):
    """A connected pymodbus TCP client."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0, **kwargs)
    assert client.connect()
    try:
        yield client
    finally:
        client.close()


def raw_request(port, unit, pdu, timeout=2.0):
    """Sends one MBAP request over a fresh socket; returns the answer's PDU (None on timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">HHHB", 0x1234, 0, len(pdu) + 1, unit) + pdu)
        try:
            header = _read(sock, 7)
        except socket.timeout:
            return None
        tid, proto, length, got_unit = struct.unpack(">HHHB", header)
        assert (tid, proto, got_unit) == (0x1234, 0, unit)
        return _read(sock, length - 1)


def _read(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@pytest.fixture
def shared():
    """A TCP server on one shared block 0..99 (zero_mode=False); yields (store, server, client)."""
    store, context = single_context()
    with tcp_server(context) as server, tcp_client(server.address[1]) as client:
        yield store, server, client


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=coilwork test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d
