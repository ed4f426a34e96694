#!/usr/bin/env python3
"""The coilwork Python package's TCP server, as the e2e benchmark runs it.

Plain ModbusSequentialDataBlocks of 10,001 values for each table, so that
protocol addresses 0..9999 work under the reference's address semantics
(zero_mode=False: a request's address is one more in the block). With
--setvalues the holding registers are a subclass whose setValues override
runs in Python for every write (pymodbus's callback-server pattern).

Usage: python_server.py PORT [--setvalues]
"""
import sys

from coilwork.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from coilwork.server import StartTcpServer

N = 10_001


class Counting(ModbusSequentialDataBlock):
    """Counts the writes it sees, then stores them."""

    writes = 0

    def setValues(self, address, values):
        Counting.writes += 1
        super().setValues(address, values)


def main():
    port = int(sys.argv[1])
    hr_class = Counting if "--setvalues" in sys.argv[2:] else ModbusSequentialDataBlock
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(0, [0] * N),
        di=ModbusSequentialDataBlock(0, [0] * N),
        hr=hr_class(0, [0] * N),
        ir=ModbusSequentialDataBlock(0, [0] * N),
    )
    print(f"coilwork (Python) server listening on 127.0.0.1:{port}", flush=True)
    StartTcpServer(context=ModbusServerContext(device_default=device, single=True), address=("127.0.0.1", port))


if __name__ == "__main__":
    main()
