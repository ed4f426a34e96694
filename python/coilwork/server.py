"""Servers, start and stop functions, and the simulator (pymodbus's ``server``).

Each server runs on a tokio runtime of its own with the GIL released, so
other Python threads run while it serves. ``serve_forever``, ``shutdown``
and ``server_close`` block when called from plain code and return a
coroutine when called inside a running event loop (``await
server.serve_forever()``), so both of pymodbus's styles work.
"""

import asyncio
import atexit
import importlib
import json
import logging
import struct
import threading
import weakref

from coilwork import FramerType, ModbusDeviceIdentification
from coilwork._coilwork import Server as _Server
from coilwork._coilwork import Session as _Session
from coilwork._coilwork import Simulator as _Simulator
from coilwork.datastore import ModbusDeviceContext, ModbusServerContext
from coilwork.pdu import ModbusPDU, _execute

__all__ = [
    "ModbusBaseServer",
    "ModbusSerialServer",
    "ModbusSimulatorServer",
    "ModbusTcpServer",
    "ModbusTlsServer",
    "ModbusUdpServer",
    "ServerAsyncStop",
    "ServerStop",
    "StartAsyncSerialServer",
    "StartAsyncTcpServer",
    "StartAsyncTlsServer",
    "StartAsyncUdpServer",
    "StartSerialServer",
    "StartTcpServer",
    "StartTlsServer",
    "StartUdpServer",
]

_log = logging.getLogger("coilwork")
#: Every server started and not yet collected, stopped at interpreter exit.
_running = weakref.WeakSet()
#: How often a blocking wait looks up for Ctrl-C (seconds).
_TICK = 0.1


def _in_event_loop():
    """True when called from a thread running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _done():
    """An awaitable that has nothing left to do."""


def _framer_name(framer, default):
    """A framer argument (FramerType, its value or name) as the Rust name."""
    if framer is None:
        return default.value
    if isinstance(framer, FramerType):
        return framer.value
    if isinstance(framer, str) and framer.lower() in {f.value for f in FramerType}:
        return framer.lower()
    raise ValueError(f"framer must be a FramerType (SOCKET, RTU, ASCII, TLS), not {framer!r}")


def _server_context(context):
    """The server context to serve: a ModbusServerContext, or one device, or a default one."""
    if context is None:
        return ModbusServerContext(device_default=ModbusDeviceContext(), single=True)
    if isinstance(context, ModbusDeviceContext):
        return ModbusServerContext(device_default=context, single=True)
    if not isinstance(context, ModbusServerContext):
        raise TypeError(f"context must be a ModbusServerContext, not {type(context).__name__}")
    return context


def _identity(identity):
    """The identity's (object id, text) pairs."""
    if identity is None:
        return []
    if not isinstance(identity, ModbusDeviceIdentification):
        raise TypeError(f"identity must be a ModbusDeviceIdentification, not {type(identity).__name__}")
    return identity._objects()


def _address(address, default_port):
    """``(host, port)`` from pymodbus's ``address`` argument."""
    if address is None:
        return "127.0.0.1", default_port
    try:
        host, port = address
    except (TypeError, ValueError):
        raise ValueError(f"address must be a (host, port) tuple, not {address!r}") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    return str(host or "0.0.0.0"), port


def _custom(custom_functions, custom_pdu):
    """The custom request classes, checked."""
    classes = list(custom_functions or []) + list(custom_pdu or [])
    for cls in classes:
        if not isinstance(cls, type) or not callable(getattr(cls, "execute", None)):
            raise TypeError(f"custom function {cls!r} must be a ModbusPDU subclass with execute()")
        code = getattr(cls, "function_code", None)
        if not isinstance(code, int) or not 0 < code < 0x80:
            raise ValueError(f"{cls.__name__}.function_code must be in 1..127, not {code!r}")
    return classes


#: pymodbus keywords that have no meaning here (accepted so its code runs).
_IGNORED = {
    "timeout", "handler", "loop", "defer_start", "request_tracer", "response_manipulator",
    "trace_packet", "trace_pdu", "trace_connect", "auto_close", "auto_open", "device_id", "slave",
}
#: Keywords the subclasses pass on to the Rust server.
_RUST_KEYS = {
    "host", "port", "backlog", "reuse_address", "reuse_port", "serial", "tls", "idle_timeout", "partial_frame_timeout",
}


class ModbusBaseServer:
    """What every server shares: the context, the start and the stop."""

    _kind = "tcp"
    _default_framer = FramerType.SOCKET
    _default_port = 502

    def __init__(
        self,
        context,
        framer=None,
        identity=None,
        *,
        custom_functions=None,
        custom_pdu=None,
        ignore_missing_devices=None,
        ignore_missing_slaves=None,
        broadcast_enable=False,
        workers=None,
        **kwargs,
    ):
        self.context = _server_context(context)
        self.identity = identity
        self.framer = _framer_name(framer, self._default_framer)
        for key in _IGNORED & kwargs.keys():
            kwargs.pop(key)
        unknown = set(kwargs) - _RUST_KEYS
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown keyword argument(s) {sorted(unknown)}")
        ignore = ignore_missing_devices if ignore_missing_devices is not None else ignore_missing_slaves
        self._options = dict(
            kwargs,
            framer="socket" if self.framer == "tls" else self.framer,
            identity=_identity(identity),
            custom=_custom(custom_functions, custom_pdu),
            runner=_execute,
            hooks=_hooks(self),
            ignore_missing=None if ignore is None else bool(ignore),
            broadcast=bool(broadcast_enable),
            workers=workers,
        )
        self._core = _Server(self._kind, self.context, **self._options)
        self._started = False

    # -- lifecycle -------------------------------------------------------

    def _start(self):
        """Binds (OSError when the port is taken) and serves in the background."""
        if not self._started:
            self._bound = self._core.bind()
            self._core.start()
            self._started = True
            _running.add(self)
            _log.info("coilwork %s server listening on %s", self._kind, self.address or self._options.get("port"))

    def _wait_blocking(self):
        """Blocks until stopped; Ctrl-C stops the server and is raised again."""
        try:
            while not self._core.wait(_TICK):
                pass
        except KeyboardInterrupt:
            self._shutdown_blocking()
            raise

    async def _wait_async(self):
        while not self._core.wait(0):
            await asyncio.sleep(0.02)

    def _shutdown_blocking(self):
        self._core.stop()
        self._core.wait(30.0)

    async def _shutdown_async(self):
        self._core.stop()
        await self._wait_async()

    async def _serve_async(self):
        self._start()
        await self._wait_async()

    def serve_forever(self, *, background=False):
        """Serves until stopped (a coroutine when called in an event loop);
        with ``background=True`` (pymodbus 3.x) it returns once listening."""
        if background:
            self._start()
            return _done() if _in_event_loop() else None
        if _in_event_loop():
            return self._serve_async()
        self._start()
        self._wait_blocking()
        return None

    def shutdown(self):
        """Stops gracefully and waits until stopped (a coroutine in an event loop)."""
        if _in_event_loop():
            return self._shutdown_async()
        self._shutdown_blocking()
        return None

    def server_close(self):
        """Stops and releases the socket (a coroutine in an event loop)."""
        self._core.close()
        return self.shutdown()

    # -- information -----------------------------------------------------

    @property
    def address(self):
        """The bound ``(host, port)`` once listening (None on a serial line)."""
        return self._core.address

    @property
    def active(self):
        """True while serving."""
        return self._started and not self._core.wait(0)

    def validate_device_id(self, device_id):
        """True if this server answers ``device_id``. A subclass may override
        it: it is then called for every request (GIL held), and a false
        answer treats the request as one for a missing device."""
        return self.context.single or device_id in self.context

    def process_request(self, request, client):
        """Called for every request when a subclass overrides it (GIL held).
        ``request`` is a ``ModbusPDU`` (``function_code``, ``dev_id``,
        ``address``, ``count``, ``bits``, ``registers`` where the function
        has them, ``pdu`` the whole request PDU); ``client`` the client's
        ``(host, port)``, None on a serial line. Return None to have the
        engine execute it (this default), or the response: a ``ModbusPDU``
        or the response PDU's bytes (function code first)."""
        return None


def _overrides(server, name):
    """True if ``server``'s class overrides ``ModbusBaseServer.name``."""
    return getattr(type(server), name) is not getattr(ModbusBaseServer, name)


def _hooks(server):
    """The (validate_device_id, process_request) callbacks the engine calls,
    for what a subclass overrides (None for the rest: the fast path)."""
    ref = weakref.ref(server)

    def validate(device_id):
        live = ref()
        return True if live is None else live.validate_device_id(device_id)

    def process(device_id, pdu, client):
        live = ref()
        if live is None:
            return None
        response = live.process_request(_request(device_id, pdu), client)
        if response is None or isinstance(response, (bytes, bytearray)):
            return response
        return bytes([response.function_code]) + bytes(response.encode())

    return (
        validate if _overrides(server, "validate_device_id") else None,
        process if _overrides(server, "process_request") else None,
    )


def _request(device_id, pdu):
    """A ModbusPDU for a request PDU, with pymodbus's fields for the data functions."""
    request = ModbusPDU(dev_id=device_id)
    request.function_code, request.pdu = pdu[0], bytes(pdu)
    request.encode = lambda: bytes(pdu[1:])
    fc, data = pdu[0], pdu[1:]
    if fc in (1, 2, 3, 4, 5, 6, 15, 16) and len(data) >= 4:
        request.address, value = struct.unpack(">HH", data[:4])
        if fc in (1, 2, 3, 4, 15, 16):
            request.count = value
        elif fc == 5:
            request.count, request.bits = 1, [value == 0xFF00]
        else:
            request.count, request.registers = 1, [value]
        if fc == 15:
            payload = data[5:]
            request.bits = [bool(payload[i // 8] >> (i % 8) & 1) for i in range(min(value, 8 * len(payload)))]
        elif fc == 16:
            request.registers = list(struct.unpack(f">{len(data[5:]) // 2}H", data[5 : 5 + len(data[5:]) // 2 * 2]))
    return request


class _NetworkServer(ModbusBaseServer):
    """TCP, UDP and TLS servers: an address and socket options."""

    def __init__(
        self,
        context,
        framer=None,
        identity=None,
        address=None,
        handler=None,
        allow_reuse_address=False,
        allow_reuse_port=False,
        defer_start=False,
        backlog=20,
        loop=None,
        **kwargs,
    ):
        host, port = _address(address, self._default_port)
        if not isinstance(backlog, int) or backlog < 1:
            raise ValueError(f"backlog must be a positive int, not {backlog!r}")
        super().__init__(
            context,
            framer,
            identity,
            host=host,
            port=port,
            backlog=backlog,
            # SO_REUSEADDR is always set on the listener (a restart binds at
            # once; on Linux it never lets two servers share a port).
            reuse_address=True,
            reuse_port=bool(allow_reuse_port),
            **kwargs,
        )


class ModbusTcpServer(_NetworkServer):
    """Modbus/TCP server (or RTU / ASCII framing over TCP with ``framer``)."""

    _kind = "tcp"


class ModbusUdpServer(_NetworkServer):
    """Modbus over UDP: one datagram is one request."""

    _kind = "udp"


class ModbusTlsServer(_NetworkServer):
    """Modbus/TCP Security: ``sslctx`` (a Python ``ssl.SSLContext``) or
    ``certfile`` / ``keyfile`` (served by rustls; ``cafile`` requires client
    certificates, as mbaps does)."""

    _kind = "tls"
    _default_framer = FramerType.TLS
    _default_port = 802

    def __init__(
        self,
        context,
        framer=None,
        identity=None,
        address=None,
        sslctx=None,
        certfile=None,
        keyfile=None,
        password=None,
        cafile=None,
        allow_reuse_address=False,
        allow_reuse_port=False,
        defer_start=False,
        backlog=20,
        loop=None,
        **kwargs,
    ):
        self._sslctx = sslctx
        if sslctx is not None:
            import ssl

            if not isinstance(sslctx, ssl.SSLContext):
                raise TypeError(f"sslctx must be an ssl.SSLContext, not {type(sslctx).__name__}")
            self._kind = "engine"
            self._front = _SslFront(sslctx, _address(address, 802), backlog, allow_reuse_port)
        elif certfile and keyfile:
            if password:
                raise ValueError("an encrypted keyfile (password=) is not supported; use sslctx=")
            kwargs["tls"] = (str(certfile), str(keyfile), None if cafile is None else str(cafile))
        else:
            raise ValueError("a TLS server needs sslctx= or certfile= and keyfile=")
        super().__init__(
            context,
            framer,
            identity,
            address,
            allow_reuse_address=allow_reuse_address,
            allow_reuse_port=allow_reuse_port,
            backlog=backlog,
            **kwargs,
        )

    def _start(self):
        if self._sslctx is None:
            return super()._start()
        if not self._started:
            self._front.start(self._core)
            self._started = True
            _running.add(self)
        return None

    def _shutdown_blocking(self):
        if self._sslctx is not None:
            self._front.stop()
        super()._shutdown_blocking()

    async def _shutdown_async(self):
        if self._sslctx is not None:
            self._front.stop()
        await super()._shutdown_async()

    def server_close(self):
        if self._sslctx is not None:
            self._front.stop()
        return super().server_close()

    @property
    def address(self):
        if self._sslctx is not None:
            return self._front.address
        return super().address


class _TlsProtocol(asyncio.Protocol):
    """One TLS client: asyncio decrypts, the Rust core's session frames,
    answers and keeps the deadlines (partial frame, idle), which this
    protocol arms as asyncio timers."""

    def __init__(self, core, connections):
        self._core = core
        self._connections = connections
        self._session = None
        self._transport = None
        self._timer = None

    def connection_made(self, transport):
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._session = _Session(self._core, (peer[0], peer[1]) if peer else None)
        self._connections.add(transport)
        self._act(self._session.poll())

    def data_received(self, data):
        self._act(self._session.feed(data))

    def eof_received(self):
        self._act(self._session.eof())
        return False

    def pause_writing(self):
        # The client does not read its answers: stop reading its requests.
        self._transport.pause_reading()

    def resume_writing(self):
        self._transport.resume_reading()

    def connection_lost(self, exc):
        self._cancel_timer()
        self._connections.discard(self._transport)

    def _on_timer(self):
        self._timer = None
        if not self._transport.is_closing():
            self._act(self._session.timeout())

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _act(self, step):
        """Writes the session's answers, then closes or re-arms the timer as it says."""
        answers, wake, closed = step
        if answers:
            self._transport.write(answers)
        self._cancel_timer()
        if closed is not None:
            _log.debug("coilwork TLS connection closed: %s", closed)
            self._transport.close()
        elif wake is not None:
            self._timer = asyncio.get_running_loop().call_later(wake, self._on_timer)


class _SslFront:
    """The asyncio TLS listener of a ``ModbusTlsServer(sslctx=...)``, on a thread of its own."""

    def __init__(self, sslctx, address, backlog, reuse_port):
        self._sslctx = sslctx
        self._host, self._port = address
        self._backlog = backlog
        self._reuse_port = bool(reuse_port)
        self._loop = None
        self._thread = None
        self.address = None

    def start(self, core):
        """Listens (raising OSError here when the port is taken), then serves on a thread."""
        ready = threading.Event()
        failure = []
        self._thread = threading.Thread(target=self._run, args=(core, ready, failure), name="coilwork-tls", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def _run(self, core, ready, failure):
        loop = asyncio.new_event_loop()
        connections = set()
        try:
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _TlsProtocol(core, connections),
                    self._host,
                    self._port,
                    ssl=self._sslctx,
                    backlog=self._backlog,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                )
            )
        except OSError as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            core.stop()
            return
        self.address = server.sockets[0].getsockname()[:2]
        self._loop = loop
        ready.set()
        loop.run_forever()
        server.close()
        for transport in list(connections):
            transport.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
        core.stop()

    def stop(self):
        """Stops listening and closes every connection."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)


class ModbusSerialServer(ModbusBaseServer):
    """RTU or ASCII on a serial line (a tty, or one end of a pty pair)."""

    _kind = "serial"
    _default_framer = FramerType.RTU

    def __init__(
        self,
        context,
        framer=FramerType.RTU,
        identity=None,
        port=None,
        stopbits=1,
        bytesize=8,
        parity="N",
        baudrate=19200,
        timeout=1,
        handle_local_echo=False,
        ignore_missing_slaves=False,
        broadcast_enable=False,
        auto_open=True,
        auto_close=False,
        **kwargs,
    ):
        if not port or not isinstance(port, str):
            raise ValueError(f"a serial server needs port= (a device path), not {port!r}")
        if framer in (FramerType.SOCKET, FramerType.TLS, "socket", "tls"):
            raise ValueError("a serial server frames with FramerType.RTU or FramerType.ASCII")
        for name, value in (("baudrate", baudrate), ("bytesize", bytesize), ("stopbits", stopbits)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', not {parity!r}")
        self.port = port
        super().__init__(
            context,
            framer,
            identity,
            ignore_missing_slaves=ignore_missing_slaves,
            broadcast_enable=broadcast_enable,
            serial=(port, baudrate, bytesize, parity, stopbits, bool(handle_local_echo)),
            **kwargs,
        )


# -- start and stop functions -------------------------------------------

_active = []
_active_lock = threading.Lock()


def _push(server):
    with _active_lock:
        _active.append(server)


def _pop(server):
    with _active_lock:
        if server in _active:
            _active.remove(server)


def _last():
    with _active_lock:
        return _active[-1] if _active else None


@atexit.register
def _stop_all():
    """At exit, stops the servers still running (their threads must not call into a finished interpreter)."""
    servers = list(_running)
    for server in servers:
        server._core.stop()
    for server in servers:
        server._core.wait(5.0)


def _run_blocking(server):
    """Serves until stopped; Ctrl-C stops the server and returns cleanly."""
    _push(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _log.info("coilwork server stopped by Ctrl-C")
    finally:
        _pop(server)


def StartTcpServer(context=None, identity=None, address=None, custom_functions=None, **kwargs):
    """Starts a TCP server and blocks until it is stopped (ServerStop or Ctrl-C)."""
    _run_blocking(ModbusTcpServer(context, identity=identity, address=address, custom_functions=custom_functions, **kwargs))


def StartUdpServer(context=None, identity=None, address=None, custom_functions=None, **kwargs):
    """Starts a UDP server and blocks until it is stopped."""
    _run_blocking(ModbusUdpServer(context, identity=identity, address=address, custom_functions=custom_functions, **kwargs))


def StartSerialServer(context=None, identity=None, port=None, custom_functions=None, **kwargs):
    """Starts a serial server and blocks until it is stopped."""
    _run_blocking(ModbusSerialServer(context, identity=identity, port=port, custom_functions=custom_functions, **kwargs))


def StartTlsServer(context=None, identity=None, address=None, sslctx=None, custom_functions=None, **kwargs):
    """Starts a TLS server and blocks until it is stopped."""
    server = ModbusTlsServer(
        context, identity=identity, address=address, sslctx=sslctx, custom_functions=custom_functions, **kwargs
    )
    _run_blocking(server)


def _start_async(server):
    server._start()
    _push(server)
    return server


async def StartAsyncTcpServer(context=None, identity=None, address=None, custom_functions=None, **kwargs):
    """Starts a TCP server; returns it once it listens."""
    return _start_async(
        ModbusTcpServer(context, identity=identity, address=address, custom_functions=custom_functions, **kwargs)
    )


async def StartAsyncUdpServer(context=None, identity=None, address=None, custom_functions=None, **kwargs):
    """Starts a UDP server; returns it once it listens."""
    return _start_async(
        ModbusUdpServer(context, identity=identity, address=address, custom_functions=custom_functions, **kwargs)
    )


async def StartAsyncSerialServer(context=None, identity=None, port=None, custom_functions=None, **kwargs):
    """Starts a serial server; returns it once the port is open."""
    return _start_async(
        ModbusSerialServer(context, identity=identity, port=port, custom_functions=custom_functions, **kwargs)
    )


async def StartAsyncTlsServer(context=None, identity=None, address=None, sslctx=None, custom_functions=None, **kwargs):
    """Starts a TLS server; returns it once it listens."""
    return _start_async(
        ModbusTlsServer(
            context, identity=identity, address=address, sslctx=sslctx, custom_functions=custom_functions, **kwargs
        )
    )


def ServerStop():
    """Stops the server started last and waits until it has stopped."""
    server = _last()
    if server is None:
        raise RuntimeError("ServerStop: no server is running")
    server._shutdown_blocking()
    _pop(server)


async def ServerAsyncStop():
    """Stops the server started last and waits (asynchronously) until it has stopped."""
    server = _last()
    if server is None:
        raise RuntimeError("ServerAsyncStop: no server is running")
    await server._shutdown_async()
    _pop(server)


# -- simulator ----------------------------------------------------------


class ModbusSimulatorServer:
    """pymodbus's simulator on coilwork-sim: the same JSON files, the Modbus
    server they describe, and the HTTP page and API. ``modbus_server`` /
    ``modbus_device`` pick entries of ``server_list`` / ``device_list``
    (default ``server`` / ``device``, or the only one); without
    ``json_file`` the built-in default configuration is served."""

    def __init__(
        self,
        modbus_server=None,
        modbus_device=None,
        http_host="localhost",
        http_port=8080,
        json_file=None,
        custom_actions_module=None,
        web_app_path=None,
    ):
        self._core = _Simulator(
            json_file=None if json_file is None else str(json_file),
            modbus_server=modbus_server,
            modbus_device=modbus_device,
            http_host=http_host,
            http_port=http_port,
            web_app_path=None if web_app_path is None else str(web_app_path),
            actions=_custom_actions(custom_actions_module),
            runner=_run_action,
        )
        self.address = None
        self.http_address = None

    async def run_forever(self, only_start=False):
        """Starts the simulator; unless ``only_start``, waits until it is stopped."""
        self.address, self.http_address = self._core.start()
        if only_start:
            return
        while not self._core.wait(0):
            await asyncio.sleep(0.05)

    def stop(self):
        """Asks the simulator to stop; ``run_forever`` then returns."""
        self._core.stop()

    def build_html(self, html_template, json_data):
        """Not used: the page is served by coilwork-sim."""
        raise NotImplementedError("coilwork-sim serves its own page")


def _custom_actions(module):
    """The ``custom_actions_dict`` of a module (its import name, or the module itself), as pymodbus looks it up."""
    if module is None:
        return []
    if isinstance(module, str):
        module = importlib.import_module(module)
    actions = getattr(module, "custom_actions_dict", None)
    if not isinstance(actions, dict):
        raise TypeError(f"custom_actions_module: {getattr(module, '__name__', module)!r} has no custom_actions_dict dict")
    for name, action in actions.items():
        if not isinstance(name, str) or not callable(action):
            raise TypeError(f"custom_actions_dict: {name!r} must name a callable, not {action!r}")
    return list(actions.items())


class SimCell:
    """One register as a custom action sees it (pymodbus's simulator ``Cell``):
    ``type`` (its name: ``"UINT16"``, ``"BITS"``, ...), ``access`` (writable)
    and ``value``, which the action may change."""

    __slots__ = ("type", "access", "value")

    def __init__(self, type_, access, value):
        self.type, self.access, self.value = type_, access, value

    def __repr__(self):
        return f"SimCell(type={self.type!r}, access={self.access}, value={self.value})"


def _run_action(action, values, types, writable, index, parameters):
    """Calls a custom action as pymodbus does, ``action(registers, index, **parameters)``; the values after it."""
    cells = [SimCell(t, w, v) for t, w, v in zip(types, writable, values)]
    action(cells, index, **json.loads(parameters))
    return [int(cell.value) & 0xFFFF for cell in cells]
