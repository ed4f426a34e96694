"""Drives a running coilwork server with pymodbus's client (a client nobody on
this project wrote) and checks every answer.

usage: pymodbus_client.py HOST PORT COMM FRAMER
  COMM: tcp | udp | serial     FRAMER: socket | rtu | ascii
  With COMM=serial, HOST is the serial device path (e.g. a socat pty) and
  PORT the baud rate; the line is 8N1.

The server must serve every unit id with 10,000 zeroed entries per table
(`coilwork serve` defaults). Prints one line per check and a closing
'N passed, M failed' line; exits non-zero on any failure.
"""
import sys
import traceback

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient, ModbusUdpClient

HOST, PORT, COMM, FRAMER = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
framer = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU, "ascii": FramerType.ASCII}[FRAMER]
if COMM == "serial":
    client = ModbusSerialClient(
        port=HOST, framer=framer, baudrate=PORT, bytesize=8, parity="N", stopbits=1, timeout=2, retries=0
    )
else:
    cls = ModbusTcpClient if COMM == "tcp" else ModbusUdpClient
    client = cls(HOST, port=PORT, framer=framer, timeout=3, retries=0)
if not client.connect():
    print(f"cannot connect to {HOST}:{PORT}")
    sys.exit(2)

results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
        except Exception as e:  # noqa: BLE001 - report every failure
            results.append((name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        return fn
    return wrap


def ok(rr):
    assert not rr.isError(), f"unexpected error response: {rr}"
    return rr


def counter(rr):
    """A diagnostics counter answer: pymodbus gives an int or a list of words."""
    return rr.message if isinstance(rr.message, int) else rr.message[0]


def exception(rr, code):
    assert rr.isError(), f"expected exception {code}, got {rr}"
    assert rr.exception_code == code, f"expected exception {code}, got {rr.exception_code}"


@check("fc16 write + fc3 read holding registers")
def _():
    values = [1, 2, 3, 0xFFFF, 0x8000, 42, 0, 7, 9, 65000]
    ok(client.write_registers(100, values, device_id=1))
    assert ok(client.read_holding_registers(100, count=10, device_id=1)).registers == values


@check("fc6 write single register + fc3 read")
def _():
    ok(client.write_register(7, 0xBEEF, device_id=1))
    assert ok(client.read_holding_registers(7, count=1, device_id=1)).registers == [0xBEEF]


@check("fc15 write coils + fc1 read coils")
def _():
    pattern = [True, False, True, True, False, False, True, False, True, True, True]
    ok(client.write_coils(10, pattern, device_id=1))
    assert ok(client.read_coils(10, count=len(pattern), device_id=1)).bits[: len(pattern)] == pattern


@check("fc5 write single coil + fc1 read")
def _():
    ok(client.write_coil(5, True, device_id=1))
    assert ok(client.read_coils(5, count=1, device_id=1)).bits[0] is True
    ok(client.write_coil(5, False, device_id=1))
    assert ok(client.read_coils(5, count=1, device_id=1)).bits[0] is False


@check("fc2 read discrete inputs and fc4 read input registers")
def _():
    assert ok(client.read_discrete_inputs(0, count=8, device_id=1)).bits[:8] == [False] * 8
    assert ok(client.read_input_registers(0, count=5, device_id=1)).registers == [0] * 5


@check("fc3 125 registers, the maximum")
def _():
    assert len(ok(client.read_holding_registers(0, count=125, device_id=1)).registers) == 125


@check("fc22 mask write register")
def _():
    ok(client.write_register(8, 0x0012, device_id=1))
    ok(client.mask_write_register(address=8, and_mask=0x00F2, or_mask=0x0025, device_id=1))
    assert ok(client.read_holding_registers(8, count=1, device_id=1)).registers == [0x0017]


@check("fc23 read/write multiple registers")
def _():
    rr = ok(client.readwrite_registers(read_address=200, read_count=3, write_address=200, values=[9, 8, 7], device_id=1))
    assert rr.registers == [9, 8, 7], rr.registers


@check("fc24 read fifo queue (count register then values)")
def _():
    ok(client.write_registers(300, [3, 11, 22, 33], device_id=1))
    if FRAMER == "rtu":
        # pymodbus 3.16's RTU framer sizes an FC24 answer as byte count + 4
        # instead of + 6 (address, function and CRC), so it never completes
        # the frame; the answer itself is checked in coilwork's own tests.
        return
    assert list(ok(client.read_fifo_queue(address=300, device_id=1)).values) == [11, 22, 33]


@check("fc7 read exception status")
def _():
    assert ok(client.read_exception_status(device_id=1)).status == 0


@check("fc8 return query data echoes")
def _():
    rr = ok(client.diag_query_data(b"\x12\x34", device_id=1))
    assert rr.message == b"\x12\x34" or list(rr.message) == [0x1234], rr.message


@check("fc8 bus message count counts traffic")
def _():
    first = counter(ok(client.diag_read_bus_message_count(device_id=1)))
    ok(client.read_holding_registers(0, count=1, device_id=1))
    second = counter(ok(client.diag_read_bus_message_count(device_id=1)))
    assert second >= first + 2, (first, second)


@check("fc11 comm event counter counts successful requests")
def _():
    first = ok(client.diag_get_comm_event_counter(device_id=1)).count
    ok(client.write_register(9, 1, device_id=1))
    second = ok(client.diag_get_comm_event_counter(device_id=1)).count
    assert second == first + 1, (first, second)


@check("fc12 comm event log")
def _():
    rr = ok(client.diag_get_comm_event_log(device_id=1))
    assert rr.message_count > 0


@check("fc17 report server id")
def _():
    rr = ok(client.report_device_id(device_id=1))
    assert rr.status is True


@check("fc43/14 read device identification (basic)")
def _():
    rr = ok(client.read_device_information(read_code=1, object_id=0, device_id=1))
    assert rr.information[0] == b"coilwork", rr.information


@check("exception 02 past the end of the table")
def _():
    exception(client.read_holding_registers(9999, count=2, device_id=1), 2)


@check("exception 02 for file records on a device without files")
def _():
    from pymodbus.pdu.file_message import FileRecord
    exception(client.read_file_record([FileRecord(file_number=1, record_number=0, record_length=2)], device_id=1), 2)


@check("exception 03 for fc16 of 124 registers (a PDU past 253 bytes), then served on")
def _():
    exception(client.write_registers(0, [1] * 124, device_id=1), 3)
    ok(client.write_register(2, 78, device_id=1))
    assert ok(client.read_holding_registers(2, count=1, device_id=1)).registers == [78]


@check("another unit id is served too")
def _():
    ok(client.write_register(1, 77, device_id=5))
    assert ok(client.read_holding_registers(1, count=1, device_id=5)).registers == [77]


client.close()
failed = 0
for name, err in results:
    if err is None:
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {err}")
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
