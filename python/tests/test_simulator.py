"""ModbusSimulatorServer on coilwork-sim, with pymodbus's simulator JSON."""

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from conftest import tcp_client

from coilwork.server import ModbusSimulatorServer

DEFAULT = Path(__file__).parent / ".." / ".." / "crates" / "coilwork-sim" / "src" / "default.json"


@pytest.fixture
def config(tmp_path):
    setup = json.loads(DEFAULT.read_text())
    setup["server_list"]["server"]["port"] = 0
    path = tmp_path / "setup.json"
    path.write_text(json.dumps(setup))
    return path


def test_run_forever_only_start_and_stop(config):
    async def main():
        simulator = ModbusSimulatorServer(http_host="127.0.0.1", http_port=0, json_file=str(config))
        await simulator.run_forever(only_start=True)
        port, http = simulator.address[1], simulator.http_address[1]
        with tcp_client(port) as client:
            assert not client.read_holding_registers(20, count=2).isError()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=5) as page:
            assert page.status == 200
        simulator.stop()
        return port

    port = asyncio.run(main())
    import socket
    import time

    # stop() asks and returns at once (as pymodbus's); the listener closes soon after.
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "the simulator still listens after stop()"
        time.sleep(0.02)


def test_run_forever_returns_after_stop(config):
    async def main():
        simulator = ModbusSimulatorServer(http_host="127.0.0.1", http_port=0, json_file=str(config))
        task = asyncio.ensure_future(simulator.run_forever())
        while simulator.address is None:
            await asyncio.sleep(0.01)
        assert not task.done()
        simulator.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_bad_json_file_raises(tmp_path):
    with pytest.raises(ValueError):
        ModbusSimulatorServer(json_file=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError):
        ModbusSimulatorServer(json_file=str(bad))


def test_named_server_and_device_and_bad_name(config):
    ModbusSimulatorServer(modbus_server="server", modbus_device="device", json_file=str(config), http_port=0)
    with pytest.raises(ValueError, match="nosuch"):
        ModbusSimulatorServer(modbus_server="nosuch", json_file=str(config))


ACTIONS = '''
calls = []


def bump(registers, inx, step=1):
    calls.append((inx, registers[inx].type, registers[inx].access))
    registers[inx].value += step


def fail(registers, inx):
    raise RuntimeError("this action always fails")


custom_actions_dict = {"bump": bump, "fail": fail}
'''


@pytest.fixture
def actions_config(config, tmp_path, monkeypatch):
    """The default device with address 8 bumped by 10 on each read and address 9 failing; the module's name."""
    (tmp_path / "coilwork_test_actions.py").write_text(ACTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    setup = json.loads(config.read_text())
    uint16 = setup["device_list"]["device"]["uint16"]
    uint16[uint16.index([7, 9])] = 7
    uint16 += [{"addr": 8, "value": 3, "action": "bump", "parameters": {"step": 10}}, {"addr": 9, "value": 0, "action": "fail"}]
    config.write_text(json.dumps(setup))
    return config, "coilwork_test_actions"


def test_custom_actions_module_runs_an_action_on_each_read(actions_config, caplog):
    import logging

    config, module = actions_config

    async def main():
        simulator = ModbusSimulatorServer(json_file=str(config), custom_actions_module=module)
        await simulator.run_forever(only_start=True)
        try:
            with tcp_client(simulator.address[1]) as client:
                first = client.read_holding_registers(8, count=1).registers
                second = client.read_holding_registers(8, count=1).registers
                with caplog.at_level(logging.ERROR, logger="coilwork"):
                    failed = client.read_holding_registers(9, count=1)
        finally:
            simulator.stop()
        return first, second, failed

    first, second, failed = asyncio.run(main())
    assert (first, second) == ([13], [23])
    assert failed.isError() and failed.exception_code == 4
    assert "custom action \"fail\" raised" in caplog.text
    import coilwork_test_actions

    assert coilwork_test_actions.calls == [(8, "UINT16", False)] * 2


def test_custom_actions_module_errors(tmp_path, monkeypatch):
    with pytest.raises(ModuleNotFoundError):
        ModbusSimulatorServer(custom_actions_module="coilwork_no_such_module")
    (tmp_path / "coilwork_no_dict.py").write_text("actions = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="custom_actions_dict"):
        ModbusSimulatorServer(custom_actions_module="coilwork_no_dict")
