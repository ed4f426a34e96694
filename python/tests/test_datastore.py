"""The data stores alone: pymodbus's block, device and server context semantics."""

import pytest

from coilwork.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSparseDataBlock,
)


def test_sequential_get_and_set():
    block = ModbusSequentialDataBlock(10, [1, 2, 3, 4])
    assert block.getValues(11, 2) == [2, 3]
    block.setValues(12, [30, 40])
    assert block.getValues(10, 4) == [1, 2, 30, 40]
    block.setValues(10, 9)
    assert block.values == [9, 2, 30, 40]
    assert block.address == 10


def test_sequential_validate_and_bounds():
    block = ModbusSequentialDataBlock(0, [0] * 5)
    assert block.validate(0, 5)
    assert not block.validate(1, 5)
    assert not block.validate(-1)
    with pytest.raises(ValueError, match="not all in the block"):
        block.getValues(4, 2)
    with pytest.raises(ValueError, match="not all in the block"):
        block.setValues(4, [1, 2])
    assert block.values == [0] * 5


def test_sequential_rejects_bad_values():
    with pytest.raises(ValueError, match="16-bit"):
        ModbusSequentialDataBlock(0, [70000])
    with pytest.raises(ValueError, match="16-bit"):
        ModbusSequentialDataBlock(0, [0]).setValues(0, [-1])
    with pytest.raises(ValueError):
        ModbusSequentialDataBlock(65530, [0] * 10)


def test_sequential_bools_and_reset_and_create():
    block = ModbusSequentialDataBlock(0, [True, False, True])
    assert block.getValues(0, 3) == [1, 0, 1]
    block.setValues(0, [0, 0, 0])
    block.reset()
    assert block.getValues(0, 3) == [1, 0, 1]
    big = ModbusSequentialDataBlock.create()
    assert len(big.values) == 65536


def test_sparse_is_mutable_by_default():
    block = ModbusSparseDataBlock({10: 1, 20: 2})
    assert block.getValues(10) == [1]
    assert not block.validate(11)
    block.setValues(11, [5, 6])
    assert block.getValues(10, 3) == [1, 5, 6]
    block.setValues({30: 7})
    assert block.getValues(30) == [7]
    assert block.values == {10: 1, 11: 5, 12: 6, 20: 2, 30: 7}


def test_sparse_immutable_refuses_new_addresses():
    block = ModbusSparseDataBlock({1: 1}, mutable=False)
    with pytest.raises(ValueError, match="immutable"):
        block.setValues(2, [3])
    block.setValues(1, [4])
    assert block.getValues(1) == [4]


def test_sparse_from_list_starts_at_zero():
    block = ModbusSparseDataBlock([5, 6, 7])
    assert block.getValues(0, 3) == [5, 6, 7]


def test_device_context_adds_one_without_zero_mode():
    hr = ModbusSequentialDataBlock(0, [10, 11, 12, 13])
    device = ModbusDeviceContext(hr=hr)
    assert device.getValues(3, 0, 2) == [11, 12]
    device.setValues(6, 0, [99])
    assert hr.getValues(1) == [99]
    assert device.validate(3, 2, 1)
    assert not device.validate(3, 3, 1)


def test_device_context_zero_mode():
    hr = ModbusSequentialDataBlock(0, [10, 11, 12])
    device = ModbusDeviceContext(hr=hr, zero_mode=True)
    assert device.getValues(3, 0, 2) == [10, 11]
    assert device.zero_mode


def test_device_context_tables_by_function_code():
    co, di, hr, ir = (ModbusSequentialDataBlock(0, [n] * 4) for n in (1, 2, 3, 4))
    device = ModbusDeviceContext(co=co, di=di, hr=hr, ir=ir)
    assert [device.getValues(fx, 0)[0] for fx in (1, 2, 3, 4, 5, 6, 15, 16)] == [1, 2, 3, 4, 1, 3, 1, 3]
    assert device.store["h"] is hr
    with pytest.raises(ValueError, match="function code 8"):
        device.getValues(8, 0)


def test_device_context_default_tables_are_full_size():
    device = ModbusDeviceContext()
    assert device.validate(3, 0, 125)
    assert device.getValues(4, 65534, 1) == [0]


def test_device_context_rejects_non_blocks():
    with pytest.raises(TypeError, match="not a data block"):
        ModbusDeviceContext(hr=[1, 2, 3])


def test_server_context_single():
    device = ModbusDeviceContext()
    context = ModbusServerContext(device_default=device, single=True)
    assert context[1] is device and context[247] is device
    assert 17 in context
    other = ModbusDeviceContext()
    context[5] = other
    assert context[1] is other


def test_server_context_multi():
    one, two = ModbusDeviceContext(), ModbusDeviceContext()
    context = ModbusServerContext(single=False)
    context[1] = one
    context[2] = two
    assert context[1] is one and context[2] is two
    assert 1 in context and 3 not in context
    del context[1]
    assert 1 not in context
    with pytest.raises(KeyError):
        context[1]
    assert context.device_ids() == [2]


def test_server_context_pymodbus_spellings():
    one = ModbusDeviceContext()
    context = ModbusServerContext(devices={1: one}, single=False)
    assert context[1] is one
    context = ModbusServerContext(devices=one, single=True)
    assert context[9] is one


def test_server_context_errors():
    context = ModbusServerContext(single=False)
    with pytest.raises(ValueError, match="0..=255"):
        context[256] = ModbusDeviceContext()
    with pytest.raises(TypeError, match="ModbusDeviceContext"):
        context[1] = "device"
    with pytest.raises(ValueError, match="single=True needs"):
        ModbusServerContext(single=True)
    assert 300 not in context
