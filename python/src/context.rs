//! `ModbusDeviceContext` (four tables of one device) and
//! `ModbusServerContext` (which device answers which device id).

use crate::blocks::{SequentialDataBlock, storage_of};
use crate::overrides::PyDeviceStorage;
use coilwork_core::Engine;
use coilwork_core::storage::{AddressMode, DataBlock, DeviceContext, ServerContext, Storage};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Table index of a function code: 0 coils, 1 discrete inputs, 2 holding, 3 input registers.
fn table_of(fx: u8) -> PyResult<usize> {
    match fx {
        1 | 5 | 15 => Ok(0),
        2 => Ok(1),
        3 | 6 | 16 | 22 | 23 | 24 => Ok(2),
        4 => Ok(3),
        _ => Err(PyValueError::new_err(format!(
            "function code {fx} reads or writes no table"
        ))),
    }
}

/// The four tables of one device (pymodbus's `ModbusDeviceContext`).
///
/// With `zero_mode=False` (the default) a request's address is 1 more in the block.
#[pyclass(subclass, module = "coilwork._coilwork", name = "DeviceContext")]
pub struct DeviceContextPy {
    /// The storage the server serves.
    pub(crate) storage: Arc<DeviceContext>,
    /// The Python blocks: co, di, hr, ir.
    blocks: [Py<PyAny>; 4],
    /// pymodbus's `zero_mode`.
    zero_mode: bool,
}

impl DeviceContextPy {
    /// The block address of a protocol address.
    fn block_address(&self, address: i64) -> i64 {
        if self.zero_mode { address } else { address + 1 }
    }

    /// The Python block of `fx`'s table.
    fn block(&self, py: Python<'_>, fx: u8) -> PyResult<Py<PyAny>> {
        Ok(self.blocks[table_of(fx)?].clone_ref(py))
    }
}

/// `block`, or a fresh 65536-value block.
fn block_or_default<'py>(py: Python<'py>, block: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    match block {
        Some(b) if !b.is_none() => Ok(b),
        _ => Ok(Bound::new(py, SequentialDataBlock::zeroed()?)?.into_any()),
    }
}

#[pymethods]
impl DeviceContextPy {
    #[new]
    #[pyo3(signature = (*_args, co=None, di=None, hr=None, ir=None, zero_mode=false, **_kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        co: Option<Bound<'_, PyAny>>,
        di: Option<Bound<'_, PyAny>>,
        hr: Option<Bound<'_, PyAny>>,
        ir: Option<Bound<'_, PyAny>>,
        zero_mode: bool,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let blocks = [co, di, hr, ir].map(|b| block_or_default(py, b));
        let [co, di, hr, ir] = blocks;
        let blocks = [co?, di?, hr?, ir?];
        let stores: Vec<Arc<dyn DataBlock>> = blocks.iter().map(storage_of).collect::<PyResult<_>>()?;
        let [c, d, h, i]: [Arc<dyn DataBlock>; 4] = stores
            .try_into()
            .map_err(|_| PyTypeError::new_err("four tables expected"))?;
        let mode = if zero_mode {
            AddressMode::ZeroBased
        } else {
            AddressMode::OneBased
        };
        Ok(Self {
            storage: Arc::new(DeviceContext::new(c, d, h, i).with_address_mode(mode)),
            blocks: blocks.map(Bound::unbind),
            zero_mode,
        })
    }

    /// pymodbus's `zero_mode`: false adds 1 to every address.
    #[getter]
    fn zero_mode(&self) -> bool {
        self.zero_mode
    }

    /// The blocks by pymodbus's table letters `c`, `d`, `h`, `i`.
    #[getter]
    fn store<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, block) in ["c", "d", "h", "i"].iter().zip(&self.blocks) {
            dict.set_item(key, block.bind(py))?;
        }
        Ok(dict)
    }

    /// Restores every block's initial values.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        for block in &self.blocks {
            block.call_method0(py, "reset")?;
        }
        Ok(())
    }

    /// The table letter of a function code.
    fn decode(&self, fx: u8) -> PyResult<&'static str> {
        Ok(["c", "d", "h", "i"][table_of(fx)?])
    }

    /// True if `count` values of `fx`'s table exist from `address`.
    #[pyo3(signature = (fx, address, count=1))]
    fn validate(&self, py: Python<'_>, fx: u8, address: i64, count: usize) -> PyResult<Py<PyAny>> {
        self.block(py, fx)?
            .call_method1(py, "validate", (self.block_address(address), count))
    }

    /// `count` values of `fx`'s table from `address`.
    #[pyo3(signature = (fx, address, count=1))]
    #[allow(non_snake_case)]
    fn getValues(&self, py: Python<'_>, fx: u8, address: i64, count: usize) -> PyResult<Py<PyAny>> {
        self.block(py, fx)?
            .call_method1(py, "getValues", (self.block_address(address), count))
    }

    /// Writes `values` to `fx`'s table from `address`, all at once (any table, inputs too).
    #[allow(non_snake_case)]
    fn setValues(&self, py: Python<'_>, fx: u8, address: i64, values: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.block(py, fx)?
            .call_method1(py, "setValues", (self.block_address(address), values))
    }
}

/// Which device answers which device id (pymodbus's `ModbusServerContext`).
#[pyclass(subclass, module = "coilwork._coilwork", name = "ServerContext")]
pub struct ServerContextPy {
    /// The context the engine serves.
    pub(crate) core: Arc<ServerContext>,
    /// Device id -> Python device context.
    devices: Py<PyDict>,
    /// The device for ids without one (the one device when `single`).
    default: Option<Py<DeviceContextPy>>,
    /// Every device id is the one device.
    single: bool,
    /// The engines serving this context: each has its own copy of the map.
    engines: Mutex<Vec<Weak<Engine>>>,
}

impl ServerContextPy {
    /// A copy of the device map for a new engine (the devices themselves are shared).
    pub(crate) fn fresh(&self) -> PyResult<ServerContext> {
        let ctx = if self.single {
            ServerContext::single(DeviceContext::with_sizes(0, 0, 0, 0).map_err(to_value_error)?)
        } else {
            ServerContext::multi()
        };
        for unit in self.core.units() {
            if let Some(device) = self.core.device(unit) {
                ctx.insert_device(unit, device);
            }
        }
        ctx.set_default_device(self.core.default_device());
        Ok(ctx)
    }

    /// Keeps `engine`'s map in step with this context from now on.
    pub(crate) fn register(&self, engine: &Arc<Engine>) {
        let mut engines = self.engines.lock().unwrap_or_else(PoisonError::into_inner);
        engines.retain(|e| e.strong_count() > 0);
        engines.push(Arc::downgrade(engine));
    }

    /// Applies a change of `unit` to every live engine.
    fn propagate(&self, unit: u8) {
        let engines = self.engines.lock().unwrap_or_else(PoisonError::into_inner);
        for engine in engines.iter().filter_map(Weak::upgrade) {
            match self
                .core
                .device(unit)
                .filter(|_| self.single || self.core.units().contains(&unit))
            {
                Some(device) => engine.context().insert_device(unit, device),
                None => engine.context().remove(unit),
            };
        }
    }
}

/// A device id from Python, checked.
fn device_id(id: i64) -> PyResult<u8> {
    u8::try_from(id).map_err(|_| PyValueError::new_err(format!("device id {id} is not in 0..=255")))
}

/// Context methods a subclass may override; any override sends the device through Python.
const OVERRIDABLE: [&str; 3] = ["getValues", "setValues", "validate"];

/// A device's storage for the engine: its Rust tables, or, for a subclass
/// that overrides `getValues` / `setValues` / `validate`, storage that calls
/// those methods with the request's own function code (GIL held).
fn storage(device: &Bound<'_, DeviceContextPy>) -> PyResult<Arc<dyn Storage>> {
    let base = device.py().get_type::<DeviceContextPy>();
    let ty = device.get_type();
    let mut overridden = false;
    for name in OVERRIDABLE {
        overridden |= !ty.getattr(name)?.is(&base.getattr(name)?);
    }
    if !overridden {
        return Ok(device.borrow().storage.clone());
    }
    // The context adds its own offset: addresses here are protocol addresses.
    Ok(Arc::new(PyDeviceStorage::new(device.as_any())))
}

#[pymethods]
impl ServerContextPy {
    #[new]
    #[pyo3(signature = (device_default=None, single=None, devices=None, **_kwargs))]
    fn new(
        py: Python<'_>,
        device_default: Option<Bound<'_, PyAny>>,
        single: Option<bool>,
        devices: Option<Bound<'_, PyAny>>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let map = PyDict::new(py);
        let given = device_default.or(devices).filter(|d| !d.is_none());
        let mut default = None;
        match given {
            Some(d) if d.is_instance_of::<PyDict>() => map.update(d.downcast::<PyDict>()?.as_mapping())?,
            Some(d) => {
                default = Some(d.downcast_into::<DeviceContextPy>().map_err(|e| {
                    PyTypeError::new_err(format!(
                        "device_default must be a ModbusDeviceContext or a dict of them: {e}"
                    ))
                })?)
            }
            None => {}
        }
        // pymodbus's default: single when given one device, a map otherwise.
        let single = single.unwrap_or(default.is_some());
        if single && default.is_none() {
            return Err(PyValueError::new_err(
                "single=True needs a device_default (a ModbusDeviceContext)",
            ));
        }
        let core = match (&default, single) {
            (Some(d), true) => {
                let ctx = ServerContext::single(DeviceContext::with_sizes(0, 0, 0, 0).map_err(to_value_error)?);
                ctx.insert(0, storage(d)?);
                ctx
            }
            (d, _) => {
                let ctx = ServerContext::multi();
                ctx.set_default(d.as_ref().map(storage).transpose()?);
                ctx
            }
        };
        let mut this = Self {
            core: Arc::new(core),
            devices: PyDict::new(py).unbind(),
            default: default.map(Bound::unbind),
            single,
            engines: Mutex::new(Vec::new()),
        };
        for (id, device) in map.iter() {
            this.__setitem__(py, id.extract()?, device)?;
        }
        Ok(this)
    }

    /// True when every device id is the one device.
    #[getter]
    fn single(&self) -> bool {
        self.single
    }

    /// The device of `device_id`.
    fn __getitem__(&self, py: Python<'_>, device_id_: i64) -> PyResult<Py<PyAny>> {
        let id = device_id(device_id_)?;
        if let (true, Some(d)) = (self.single, &self.default) {
            return Ok(d.clone_ref(py).into_any());
        }
        if let Some(d) = self.devices.bind(py).get_item(id)? {
            return Ok(d.unbind());
        }
        match &self.default {
            Some(d) => Ok(d.clone_ref(py).into_any()),
            None => Err(PyKeyError::new_err(format!("device id {id} has no device"))),
        }
    }

    /// Serves `device` as `device_id` (in single mode: replaces the one device).
    fn __setitem__(&mut self, py: Python<'_>, device_id_: i64, device: Bound<'_, PyAny>) -> PyResult<()> {
        let id = device_id(device_id_)?;
        let device = device
            .downcast_into::<DeviceContextPy>()
            .map_err(|e| PyTypeError::new_err(format!("a device must be a ModbusDeviceContext: {e}")))?;
        self.core.insert(id, storage(&device)?);
        self.propagate(id);
        if self.single {
            self.default = Some(device.unbind());
        } else {
            self.devices.bind(py).set_item(id, device)?;
        }
        Ok(())
    }

    /// Stops serving `device_id` (nothing in single mode).
    fn __delitem__(&self, py: Python<'_>, device_id_: i64) -> PyResult<()> {
        let id = device_id(device_id_)?;
        if !self.single {
            self.core.remove(id);
            self.propagate(id);
            self.devices.bind(py).del_item(id)?;
        }
        Ok(())
    }

    /// True if `device_id` has a device of its own (any id in single mode).
    fn __contains__(&self, py: Python<'_>, device_id_: i64) -> PyResult<bool> {
        let Ok(id) = device_id(device_id_) else {
            return Ok(false);
        };
        Ok(self.single || self.devices.bind(py).contains(id)?)
    }

    /// The device ids with a device of their own.
    fn device_ids(&self, py: Python<'_>) -> PyResult<Vec<u16>> {
        if self.single {
            return Ok((0..=255u16).collect());
        }
        self.devices.bind(py).keys().extract()
    }
}

/// A configuration error as a Python `ValueError`.
fn to_value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}
