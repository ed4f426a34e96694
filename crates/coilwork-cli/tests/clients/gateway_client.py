"""pymodbus's client through `coilwork gateway`.

usage: gateway_client.py PORT MODE
  MODE fcs:   every public function code to units 1 and 2, values checked
              where the upstream keeps data; a gateway exception (0x0A/0x0B)
              is a failure everywhere.
  MODE crowd: 22 concurrent clients, each writing and reading back its own
              registers on units 1 and 2, no cross-talk.
  MODE probe [UNIT]: one FC3 read (unit 1 by default); prints 'ok MS',
              'exception N MS' (MS: the request's round trip) or 'error ...'.
Prints 'N passed, M failed'; exits non-zero on a failure.
"""
import sys
import threading
import time
import traceback

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.file_message import FileRecord

PORT, MODE = int(sys.argv[1]), sys.argv[2]
results = []
lock = threading.Lock()


def record(name, err):
    with lock:
        results.append((name, err))


def client():
    c = ModbusTcpClient("127.0.0.1", port=PORT, timeout=5, retries=0)
    assert c.connect(), "connect"
    return c


def not_gateway_failure(rr):
    code = getattr(rr, "exception_code", None)
    assert not (rr.isError() and code in (0x0A, 0x0B)), f"gateway failure {rr}"
    return rr


def fcs():
    c = client()
    for unit in (1, 2):
        base = unit * 10
        checks = {
            "fc05": lambda: (c.write_coil(base, True, device_id=unit), c.read_coils(base, count=1, device_id=unit).bits[0] is True),
            "fc15+fc01": lambda: (c.write_coils(base + 1, [True, False, True], device_id=unit),
                                  c.read_coils(base + 1, count=3, device_id=unit).bits[:3] == [True, False, True]),
            "fc02": lambda: (None, not c.read_discrete_inputs(base, count=4, device_id=unit).isError()),
            "fc06+fc03": lambda: (c.write_register(base, 1000 + unit, device_id=unit),
                                  c.read_holding_registers(base, count=1, device_id=unit).registers == [1000 + unit]),
            "fc16+fc03": lambda: (c.write_registers(base + 1, [7, 8, unit], device_id=unit),
                                  c.read_holding_registers(base + 1, count=3, device_id=unit).registers == [7, 8, unit]),
            "fc04": lambda: (None, c.read_input_registers(base, count=2, device_id=unit).registers == [0, 0]),
            "fc22": lambda: (c.mask_write_register(address=base, and_mask=0x00F0, or_mask=0x0003, device_id=unit),
                             not_gateway_failure(c.read_holding_registers(base, count=1, device_id=unit)) is not None),
            "fc23": lambda: (None, c.readwrite_registers(read_address=base + 1, read_count=2, write_address=base + 5,
                                                        values=[5, 6], device_id=unit).registers == [7, 8]),
            "fc07": lambda: (None, not_gateway_failure(c.read_exception_status(device_id=unit)) is not None),
            "fc08": lambda: (None, not_gateway_failure(c.diag_read_bus_message_count(device_id=unit)) is not None),
            "fc11": lambda: (None, not_gateway_failure(c.diag_get_comm_event_counter(device_id=unit)) is not None),
            "fc12": lambda: (None, not_gateway_failure(c.diag_get_comm_event_log(device_id=unit)) is not None),
            "fc17": lambda: (None, not_gateway_failure(c.report_device_id(device_id=unit)) is not None),
            # Two registers: for one, pymodbus 3.16.1 answers a malformed exception (0x80 01), which
            # the gateway rightly refuses to pass on (0x0B).
            "fc20": lambda: (None, not_gateway_failure(c.read_file_record([FileRecord(file_number=1, record_number=0, record_length=4)], device_id=unit)) is not None),
            "fc21": lambda: (None, not_gateway_failure(c.write_file_record([FileRecord(file_number=1, record_number=0, record_data=b"\x00\x01")], device_id=unit)) is not None),
            "fc24": lambda: (None, not_gateway_failure(c.read_fifo_queue(address=base, device_id=unit)) is not None),
            "fc43": lambda: (None, not_gateway_failure(c.read_device_information(device_id=unit)) is not None),
        }
        for name, fn in checks.items():
            try:
                first, ok = fn()
                if first is not None:
                    not_gateway_failure(first)
                    assert not first.isError(), f"write refused: {first}"
                assert ok, "value check"
                record(f"unit {unit} {name}", None)
            except Exception as e:  # noqa: BLE001
                record(f"unit {unit} {name}", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    c.close()


def crowd():
    def one(i):
        c = client()
        try:
            for unit in (1, 2):
                for rnd in range(5):
                    values = [i * 100 + rnd, unit, rnd]
                    w = c.write_registers(i * 3, values, device_id=unit)
                    assert not w.isError(), f"write {w}"
                    r = c.read_holding_registers(i * 3, count=3, device_id=unit)
                    assert r.registers == values, f"client {i} unit {unit} read {r.registers} != {values}"
            record(f"client {i}", None)
        except Exception as e:  # noqa: BLE001
            record(f"client {i}", f"{type(e).__name__}: {e}")
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def probe():
    try:
        c = ModbusTcpClient("127.0.0.1", port=PORT, timeout=3, retries=0)
        c.connect()
        unit = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        start = time.monotonic()
        rr = c.read_holding_registers(0, count=1, device_id=unit)
        ms = int((time.monotonic() - start) * 1000)
        print(f"ok {ms}" if not rr.isError() else f"exception {rr.exception_code} {ms}")
        c.close()
    except (ModbusIOException, Exception) as e:  # noqa: BLE001
        print(f"error {e}")
    sys.exit(0)


{"fcs": fcs, "crowd": crowd, "probe": probe}[MODE]()
failed = [r for r in results if r[1]]
for name, err in results:
    print(f"{'FAIL' if err else 'ok  '} {name}" + (f": {err}" if err else ""))
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed or not results else 0)
