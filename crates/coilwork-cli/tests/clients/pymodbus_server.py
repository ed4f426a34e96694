"""pymodbus's own server as a gateway upstream (a device nobody here wrote).

usage: pymodbus_server.py COMM WHERE FRAMER [DELAY_MS]
  COMM: tcp (WHERE = PORT on 127.0.0.1) | serial (WHERE = pty path, 19200 8N1)
  FRAMER: socket | rtu | ascii
  DELAY_MS: a delay fault, every answer held this long (blocks the server).

Units 1 and 2, each its own device with 100 zeroed entries per table.
Prints 'ready' once serving.
"""
import asyncio
import logging
import sys
import time

from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

logging.disable(logging.WARNING)
COMM, WHERE, FRAMER = sys.argv[1], sys.argv[2], sys.argv[3]
DELAY = int(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0
framer = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU, "ascii": FramerType.ASCII}[FRAMER]


def device():
    return ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [False] * 100),
        di=ModbusSequentialDataBlock(1, [False] * 100),
        hr=ModbusSequentialDataBlock(1, [0] * 100),
        ir=ModbusSequentialDataBlock(1, [0] * 100),
    )


def trace_packet(sending, data):
    if sending and DELAY:
        time.sleep(DELAY)
    return data


async def main():
    context = ModbusServerContext(devices={1: device(), 2: device()}, single=False)
    print("ready", flush=True)
    if COMM == "tcp":
        await StartAsyncTcpServer(
            context, address=("127.0.0.1", int(WHERE)), framer=framer, trace_packet=trace_packet
        )
    else:
        await StartAsyncSerialServer(
            context, port=WHERE, framer=framer, baudrate=19200, bytesize=8, parity="N", stopbits=1,
            trace_packet=trace_packet,
        )


asyncio.run(main())
