"""Data stores: blocks, device contexts and the server context (pymodbus's names).

``ModbusSequentialDataBlock`` and ``ModbusSparseDataBlock`` live in Rust and
are served without Python; a subclass that overrides ``getValues``,
``setValues`` or ``validate`` is called by the server with the GIL held.
"""

from coilwork._coilwork import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSparseDataBlock,
)

__all__ = [
    "ModbusDeviceContext",
    "ModbusSequentialDataBlock",
    "ModbusServerContext",
    "ModbusSparseDataBlock",
    "ModbusSlaveContext",
]

#: pymodbus 3.x's older name of the device context.
ModbusSlaveContext = ModbusDeviceContext
