"""Data stores: blocks, device contexts and the server context (pymodbus's names).

The blocks' storage lives in Rust and a plain block is served without
entering Python. A subclass that overrides ``getValues``, ``setValues`` or
``validate`` (pymodbus's "callback server" pattern) is called by the server
with the GIL held; its ``__init__`` may take arguments of its own before
calling ``super().__init__(address, values)``.
"""

from coilwork import _coilwork

__all__ = [
    "ModbusDeviceContext",
    "ModbusSequentialDataBlock",
    "ModbusServerContext",
    "ModbusSlaveContext",
    "ModbusSparseDataBlock",
]


class ModbusSequentialDataBlock(_coilwork.SequentialDataBlock):
    """A dense block of values from ``address``; a multi-value write is seen whole or not at all."""

    def __init__(self, address=0, values=None):
        self._init(address, values)


class ModbusSparseDataBlock(_coilwork.SparseDataBlock):
    """A block of the listed addresses (a dict, or a list from 0); ``mutable``
    lets ``setValues`` add addresses. A client's request must name defined addresses."""

    def __init__(self, values=None, mutable=True):
        self._init(values, mutable)


class ModbusDeviceContext(_coilwork.DeviceContext):
    """The four tables of one device; with ``zero_mode=False`` (the default)
    a request's address is one more in the block."""

    def __init__(self, *args, **kwargs):
        """Built by ``__new__`` from the same arguments."""


class ModbusServerContext(_coilwork.ServerContext):
    """Which device answers which device id: ``single=True`` serves one device for every id."""

    def __init__(self, *args, **kwargs):
        """Built by ``__new__`` from the same arguments."""


#: pymodbus 3.x's older name of the device context.
ModbusSlaveContext = ModbusDeviceContext
