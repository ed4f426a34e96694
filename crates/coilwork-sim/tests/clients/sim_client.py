"""Checks a running coilwork simulator with pymodbus's client against
pymodbus's own simulator datastore built from the same JSON file.

usage: sim_client.py HOST PORT JSON_FILE DEVICE

Prints one line per check and 'N passed, M failed'; exits non-zero on failure.
"""
import asyncio
import copy
import datetime
import json
import logging
import sys
import traceback

from pymodbus.client import ModbusTcpClient
from pymodbus.datastore import ModbusSimulatorContext
from pymodbus.datastore.simulator import CellType

logging.disable(logging.WARNING)
HOST, PORT, JSON_FILE, DEVICE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(JSON_FILE, encoding="utf-8") as f:
    SETUP = json.load(f)
REF = ModbusSimulatorContext(copy.deepcopy(SETUP["device_list"][DEVICE]), None)
client = ModbusTcpClient(HOST, port=PORT, timeout=3, retries=0)
if not client.connect():
    print(f"cannot connect to {HOST}:{PORT}")
    sys.exit(2)
DT = client.DATATYPE
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


def hr(address, count=1):
    rr = client.read_holding_registers(address, count=count)
    assert not rr.isError(), f"read {address}+{count}: {rr}"
    return rr.registers


def exc(rr):
    assert rr.isError(), f"expected an exception, got {rr}"
    return rr.exception_code


@check("static registers equal pymodbus's datastore, register by register")
def _():
    n = 0
    for i, cell in enumerate(REF.registers):
        if cell.type == CellType.INVALID or cell.action:
            continue
        if cell.type == CellType.NEXT:
            continue  # read with its first register (type exception is on)
        count = 1 if cell.type == CellType.STRING else CellType.register_count(cell.type)
        if cell.type == CellType.STRING:
            while i + count < len(REF.registers) and REF.registers[i + count].type == CellType.NEXT:
                count += 1
        got = hr(i, count)
        want = [REF.registers[j].value for j in range(i, i + count)]
        assert got == want, f"register {i}: coilwork {got}, pymodbus {want}"
        n += 1
    assert n > 10, n


@check("which single and double reads answer exception 02 matches pymodbus's validate")
def _():
    for count in (1, 2, 4):
        for address in range(0, 120):
            expect_ok = REF.validate(3, address, count)
            resets = any(
                REF.action_id_to_name[REF.registers[j].action] == "reset"
                for j in range(address, address + count)
            )
            rr = client.read_holding_registers(address, count=count)
            if expect_ok and resets:
                assert exc(rr) == 4, f"{address}+{count}: {rr}"  # pymodbus: the action raises
            elif expect_ok:
                assert not rr.isError(), f"{address}+{count}: {rr}"
            else:
                assert exc(rr) == 2, f"{address}+{count}: {rr}"


@check("uint32 / float32 / float64 / string decode with convert_from_registers")
def _():
    assert client.convert_from_registers(hr(4, 2), DT.UINT32) == 617001
    assert abs(client.convert_from_registers(hr(6, 2), DT.FLOAT32) - 404.17) < 1e-4
    assert client.convert_from_registers(hr(12, 4), DT.FLOAT64) == -505.78
    assert client.convert_from_registers(hr(16, 4), DT.STRING) == "A_B_C_D_"
    assert client.convert_from_registers(hr(100, 2), DT.UINT32) == 0


@check("bits registers serve coils and discrete inputs, bit 0 first")
def _():
    rr = client.read_coils(32, count=16)
    assert not rr.isError(), rr
    assert rr.bits[:16] == [bool(7 & (1 << b)) for b in range(16)], rr.bits
    rr = client.read_discrete_inputs(800, count=16)
    assert rr.bits[:16] == [bool(42405 & (1 << b)) for b in range(16)], rr.bits
    assert exc(client.read_coils(16, count=1)) == 2  # register 1 is invalid


@check("undefined address answers exception 02")
def _():
    assert exc(client.read_holding_registers(1, count=1)) == 2
    assert exc(client.read_input_registers(8, count=1)) == 2
    assert exc(client.read_holding_registers(195, count=10)) == 2


@check("write protection: exception 02, value unchanged; writable values stay written")
def _():
    assert exc(client.write_register(4, 1)) == 2
    assert client.convert_from_registers(hr(4, 2), DT.UINT32) == 617001
    assert exc(client.write_registers(2, [1, 2])) == 2  # 2 is read-only, 3 writable: nothing written
    assert hr(3) == [17001]
    rr = client.write_register(3, 1234)
    assert not rr.isError(), rr
    assert hr(3) == [1234]
    rr = client.write_registers(10, client.convert_to_registers(4000000000, DT.UINT32))
    assert not rr.isError(), rr
    assert client.convert_from_registers(hr(10, 2), DT.UINT32) == 4000000000
    assert exc(client.write_register(10, 1)) == 2  # half a uint32 with type exception
    rr = client.write_registers(40, client.convert_to_registers("changed!!!", DT.STRING))
    assert not rr.isError(), rr
    assert client.convert_from_registers(hr(40, 5), DT.STRING) == "changed!!!"
    rr = client.write_coil(50 * 16 + 1, False)
    assert not rr.isError(), rr
    assert hr(50) == [42405 & ~2]
    assert exc(client.write_coil(2 * 16, False)) == 2


@check("increment fires on each read; minval/maxval wrap; float increments")
def _():
    a, b, c = hr(20)[0], hr(20)[0], hr(20)[0]
    assert (b, c) == (a + 1, a + 2), (a, b, c)
    seq = [hr(21)[0] for _ in range(5)]
    assert seq == [51, 52, 45, 46, 47], seq
    f1 = client.convert_from_registers(hr(26, 2), DT.FLOAT32)
    f2 = client.convert_from_registers(hr(26, 2), DT.FLOAT32)
    assert f2 == f1 + 1.0, (f1, f2)


@check("random stays within minval..maxval")
def _():
    for _ in range(20):
        v = hr(23)[0]
        assert 10 <= v <= 20, v


@check("timestamp: year, month-1, day, weekday (Monday 1), hour, minute, second")
def _():
    before = datetime.datetime.now()
    regs = hr(30, 7)
    after = datetime.datetime.now()
    ok = False
    for t in (before, after):
        want = [t.year, t.month - 1, t.day, t.weekday() + 1, t.hour, t.minute]
        ok = ok or regs[:6] == want
    assert ok, (regs, before, after)
    assert 0 <= regs[6] <= 59, regs


@check("uptime: seconds since start, plus one")
def _():
    v = client.convert_from_registers(hr(24, 2), DT.UINT32)
    assert 1 <= v <= 120, v


@check("reset answers exception 04 and restores the configured values")
def _():
    assert hr(3) == [1234]
    assert exc(client.read_holding_registers(22, count=1)) == 4
    assert hr(3) == [17001]
    assert client.convert_from_registers(hr(10, 2), DT.UINT32) == 5


@check("repeat copies registers 100..103 over 110..117")
def _():
    for i in range(110, 118):
        assert REF.registers[i].type == REF.registers[100 + (i - 110) % 4].type
    assert client.convert_from_registers(hr(110, 2), DT.UINT32) == 0
    assert exc(client.read_holding_registers(111, count=1)) == 2


@check("device identification from the server's identity")
def _():
    rr = client.read_device_information()
    assert not rr.isError(), rr
    assert rr.information[0] == b"pymodbus", rr.information


client.close()
failed = 0
for name, error in results:
    print(("ok   " if error is None else "FAIL ") + name)
    if error:
        failed += 1
        print(error)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
