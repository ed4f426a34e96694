"""Custom function codes: subclass ``ModbusPDU`` (pymodbus's ``coilwork.pdu``)."""

import inspect
import threading

__all__ = ["ModbusPDU", "ExceptionResponse"]


class ModbusPDU:
    """Base of a custom request or response.

    A request class sets ``function_code``, ``decode(data)`` reads the bytes
    after the function code, and ``execute(context)`` (a function or a
    coroutine) returns the response PDU; ``encode()`` gives the bytes after
    the function code. ``rtu_frame_size`` (the whole RTU frame, if fixed)
    lets RTU over a stream frame the request by length.
    """

    function_code = 0
    sub_function_code = -1
    rtu_frame_size = 0

    def __init__(self, dev_id=0, transaction_id=0, address=0, count=0, bits=None, registers=None, status=1, **kwargs):
        self.dev_id = kwargs.get("device_id", kwargs.get("slave", dev_id))
        self.transaction_id = transaction_id
        self.address = address
        self.count = count
        self.bits = bits or []
        self.registers = registers or []
        self.status = status

    def encode(self):
        """The PDU's bytes after the function code."""
        return b""

    def decode(self, data):
        """Reads the PDU's bytes after the function code."""

    def execute(self, context):
        """Answers this request with a response PDU (may be a coroutine)."""
        raise NotImplementedError(f"{type(self).__name__}.execute")


class ExceptionResponse(ModbusPDU):
    """An exception answer: ``function_code | 0x80`` and one exception code."""

    def __init__(self, function_code, exception_code=4, **kwargs):
        super().__init__(**kwargs)
        self.function_code = function_code | 0x80
        self.exception_code = exception_code

    def encode(self):
        return bytes([self.exception_code])


_loops = threading.local()


def _await(awaitable):
    """Runs a coroutine ``execute`` on this server thread's own event loop."""
    import asyncio

    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop.run_until_complete(awaitable)


def _execute(cls, data, device_id, server_context):
    """Called by the server for a custom function code: the response PDU bytes."""
    try:
        request = cls(dev_id=device_id)
    except TypeError:
        request = cls()
    request.decode(data)
    try:
        device = server_context[device_id]
    except KeyError:
        device = None
    response = request.execute(device)
    if inspect.isawaitable(response):
        response = _await(response)
    if isinstance(response, (bytes, bytearray)):
        return bytes(response)
    return bytes([response.function_code]) + bytes(response.encode())
