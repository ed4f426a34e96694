//! A `ModbusDeviceContext` subclass that overrides `validate` / `getValues`
//! / `setValues`, served as storage: each call gets the request's own
//! function code (5 for a single coil, 6 for a single register, 22 for a
//! mask write, ...), as pymodbus passes it, with the GIL held.

use crate::blocks::{call_python, to_u16};
use coilwork_core::ExceptionCode;
use coilwork_core::storage::{RequestContext, Storage};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// A Python device context; addresses are protocol addresses (the context
/// applies its own `zero_mode` offset).
pub(crate) struct PyDeviceStorage {
    /// The `ModbusDeviceContext` subclass instance.
    obj: Py<PyAny>,
}

/// `validate(fx, address, count)` is true.
fn valid(obj: &Bound<'_, PyAny>, fx: u8, start: u16, count: usize) -> PyResult<bool> {
    obj.call_method1("validate", (fx, start, count))?.is_truthy()
}

/// `validate` then `getValues(fx, address, count)`, as pymodbus's server does.
fn get(obj: &Bound<'_, PyAny>, fx: u8, start: u16, count: usize) -> PyResult<Result<Vec<u16>, ExceptionCode>> {
    if !valid(obj, fx, start, count)? {
        return Ok(Err(ExceptionCode::IllegalDataAddress));
    }
    let values = obj.call_method1("getValues", (fx, start, count))?;
    let values: Vec<u16> = values.try_iter()?.map(|v| to_u16(&v?)).collect::<PyResult<_>>()?;
    if values.len() != count {
        return Err(PyValueError::new_err(format!(
            "getValues gave {} values for {count}",
            values.len()
        )));
    }
    Ok(Ok(values))
}

/// `validate` then `setValues(fx, address, values)`.
fn set(obj: &Bound<'_, PyAny>, fx: u8, start: u16, values: Bound<'_, PyList>) -> PyResult<Result<(), ExceptionCode>> {
    if !valid(obj, fx, start, values.len())? {
        return Ok(Err(ExceptionCode::IllegalDataAddress));
    }
    obj.call_method1("setValues", (fx, start, values))?;
    Ok(Ok(()))
}

impl PyDeviceStorage {
    /// Serves `obj` (a device context whose methods Python overrides).
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> Self {
        Self {
            obj: obj.clone().unbind(),
        }
    }

    /// Reads `out.len()` registers with the request's function code.
    fn read(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let values = call_python(&self.obj, "getValues", |obj| get(obj, ctx.function, start, out.len()))?;
        out.copy_from_slice(&values);
        Ok(())
    }

    /// Reads `out.len()` bits with the request's function code.
    fn read_bits(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let values = call_python(&self.obj, "getValues", |obj| get(obj, ctx.function, start, out.len()))?;
        for (o, v) in out.iter_mut().zip(values) {
            *o = v != 0;
        }
        Ok(())
    }
}

impl Storage for PyDeviceStorage {
    fn read_coils(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        self.read_bits(ctx, start, out)
    }

    fn read_discrete_inputs(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [bool],
    ) -> Result<(), ExceptionCode> {
        self.read_bits(ctx, start, out)
    }

    fn read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        self.read(ctx, start, out)
    }

    fn read_input_registers(&self, ctx: &RequestContext<'_>, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        self.read(ctx, start, out)
    }

    fn write_coils(&self, ctx: &RequestContext<'_>, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        call_python(&self.obj, "setValues", |obj| {
            set(obj, ctx.function, start, PyList::new(obj.py(), values)?)
        })
    }

    fn write_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        start: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        call_python(&self.obj, "setValues", |obj| {
            set(obj, ctx.function, start, PyList::new(obj.py(), values)?)
        })
    }

    /// FC22: `getValues(22, ...)` then `setValues(22, ...)`, under one GIL hold.
    fn mask_write_register(
        &self,
        ctx: &RequestContext<'_>,
        address: u16,
        and_mask: u16,
        or_mask: u16,
    ) -> Result<u16, ExceptionCode> {
        call_python(&self.obj, "getValues/setValues", |obj| {
            let old = match get(obj, ctx.function, address, 1)? {
                Ok(v) => v.first().copied().unwrap_or_default(),
                Err(code) => return Ok(Err(code)),
            };
            let new = (old & and_mask) | (or_mask & !and_mask);
            Ok(set(obj, ctx.function, address, PyList::new(obj.py(), [new])?)?.map(|()| new))
        })
    }

    /// FC23: both ranges validated, then `setValues(23, ...)`, then `getValues(23, ...)`.
    fn write_read_holding_registers(
        &self,
        ctx: &RequestContext<'_>,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let fx = ctx.function;
        let read = call_python(&self.obj, "setValues/getValues", |obj| {
            if !valid(obj, fx, read_start, out.len())? {
                return Ok(Err(ExceptionCode::IllegalDataAddress));
            }
            if let Err(code) = set(obj, fx, write_start, PyList::new(obj.py(), values)?)? {
                return Ok(Err(code));
            }
            get(obj, fx, read_start, out.len())
        })?;
        out.copy_from_slice(&read);
        Ok(())
    }

    fn reset(&self) {
        let _ = call_python(&self.obj, "reset", |obj| obj.call_method0("reset").map(|_| Ok(())));
    }
}
