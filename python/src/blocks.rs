//! The data blocks: `ModbusSequentialDataBlock`, `ModbusSparseDataBlock`, and
//! the bridge that serves a Python subclass's `getValues` / `setValues`.

use crate::log;
use coilwork_core::ExceptionCode;
use coilwork_core::storage::{DataBlock, SequentialBlock, SparseBlock};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use std::sync::Arc;

/// Methods a subclass may override; any override sends the block through Python.
const OVERRIDABLE: [&str; 3] = ["getValues", "setValues", "validate"];

/// One Python value as a register (bools count as 0/1).
pub(crate) fn to_u16(value: &Bound<'_, PyAny>) -> PyResult<u16> {
    let v: i64 = value.extract()?;
    u16::try_from(v).map_err(|_| PyValueError::new_err(format!("value {v} is not a 16-bit register (0..=65535)")))
}

/// `values` (one value or an iterable of them) as registers.
pub(crate) fn to_registers(values: &Bound<'_, PyAny>) -> PyResult<Vec<u16>> {
    if let Ok(one) = to_u16(values) {
        return Ok(vec![one]);
    }
    values.try_iter()?.map(|v| to_u16(&v?)).collect()
}

/// A protocol address from Python, checked.
fn to_address(address: i64) -> PyResult<u16> {
    u16::try_from(address).map_err(|_| PyValueError::new_err(format!("address {address} is not in 0..=65535")))
}

/// A Python error for a failed block operation.
fn block_error(code: ExceptionCode, address: u16, count: usize) -> PyErr {
    PyValueError::new_err(format!(
        "addresses {address}..{} are not all in the block ({code:?})",
        usize::from(address) + count
    ))
}

/// Reads `count` values at `address` from any block.
fn read_values(block: &dyn DataBlock, address: i64, count: usize) -> PyResult<Vec<u16>> {
    let start = to_address(address)?;
    let mut out = vec![0u16; count];
    block
        .read_registers(start, &mut out)
        .map_err(|c| block_error(c, start, count))?;
    Ok(out)
}

/// True if `count` values at `address` exist in the block.
fn valid(block: &dyn DataBlock, address: i64, count: usize) -> bool {
    let Ok(start) = u16::try_from(address) else {
        return false;
    };
    let mut out = vec![0u16; count];
    count > 0 && block.read_registers(start, &mut out).is_ok()
}

/// A dense block of values from `address` (pymodbus's sequential block).
#[pyclass(subclass, module = "coilwork._coilwork", name = "SequentialDataBlock")]
pub struct SequentialDataBlock {
    /// The storage the server reads and writes.
    pub(crate) block: Arc<SequentialBlock>,
}

#[pymethods]
impl SequentialDataBlock {
    /// An empty block; `__init__` (in Python) fills it, so subclasses may
    /// take arguments of their own before calling `super().__init__`.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::build(0, Vec::new())
    }

    /// Sets the block's start address and values (called by `__init__`).
    #[pyo3(signature = (address=0, values=None))]
    fn _init(&mut self, address: i64, values: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let values = match values {
            Some(v) => to_registers(v)?,
            None => vec![0],
        };
        *self = Self::build(to_address(address)?, values)?;
        Ok(())
    }

    /// A block of 65536 zeros at address 0 (pymodbus's `create`).
    #[classmethod]
    fn create(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
        Ok(cls.call1((0, PyList::new(cls.py(), vec![0u16; 0x1_0000])?))?.unbind())
    }

    /// The block's first address.
    #[getter]
    fn address(&self) -> u16 {
        self.block.start()
    }

    /// A snapshot of the block's values.
    #[getter]
    fn values(&self) -> Vec<u16> {
        self.block.values()
    }

    /// Restores the values the block was built with.
    fn reset(&self) {
        self.block.reset();
    }

    /// True if `count` values from `address` are all in the block.
    #[pyo3(signature = (address, count=1))]
    fn validate(&self, address: i64, count: usize) -> bool {
        valid(&*self.block, address, count)
    }

    /// `count` values from `address`.
    #[pyo3(signature = (address, count=1))]
    #[allow(non_snake_case)]
    fn getValues(&self, address: i64, count: usize) -> PyResult<Vec<u16>> {
        read_values(&*self.block, address, count)
    }

    /// Writes `values` (one or a list) from `address`, all at once.
    #[allow(non_snake_case)]
    fn setValues(&self, address: i64, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let start = to_address(address)?;
        let values = to_registers(values)?;
        self.block
            .write_registers(start, &values)
            .map_err(|c| block_error(c, start, values.len()))
    }
}

impl SequentialDataBlock {
    /// 65536 zeros at address 0 (the block of a table not given).
    pub(crate) fn zeroed() -> PyResult<Self> {
        Self::build(0, vec![0; 0x1_0000])
    }

    /// A block of `values` from `start`.
    fn build(start: u16, values: Vec<u16>) -> PyResult<Self> {
        let block =
            SequentialBlock::new(start, values).map_err(|e| PyValueError::new_err(format!("block at {start}: {e}")))?;
        Ok(Self { block: Arc::new(block) })
    }
}

/// A block of listed addresses only (pymodbus's sparse block).
#[pyclass(subclass, module = "coilwork._coilwork", name = "SparseDataBlock")]
pub struct SparseDataBlock {
    /// The storage the server reads and writes.
    pub(crate) block: Arc<SparseBlock>,
    /// Whether `setValues` may add addresses.
    mutable: bool,
}

/// (address, value) pairs from a dict, or a list taken from address 0.
fn sparse_pairs(values: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(u16, u16)>> {
    let Some(values) = values else {
        return Ok(Vec::new());
    };
    if let Ok(dict) = values.downcast::<PyDict>() {
        return dict
            .iter()
            .map(|(k, v)| Ok((to_address(k.extract()?)?, to_u16(&v)?)))
            .collect();
    }
    let list = to_registers(values)?;
    (0..).zip(list).map(|(a, v)| Ok((to_address(a)?, v))).collect()
}

impl SparseDataBlock {
    /// Defines the addresses of `start..start+len` not yet in the block.
    fn add_missing(&self, start: u16, values: &[u16]) -> PyResult<()> {
        for (address, value) in (start..=u16::MAX).zip(values) {
            if !self.block.contains(address) {
                if !self.mutable {
                    return Err(PyValueError::new_err(format!(
                        "address {address} is not in the immutable block"
                    )));
                }
                self.block.insert(address, *value);
            }
        }
        Ok(())
    }
}

#[pymethods]
impl SparseDataBlock {
    /// An empty block; `__init__` (in Python) fills it.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Self {
            block: Arc::new(SparseBlock::new([])),
            mutable: true,
        }
    }

    /// Sets the block's values and mutability (called by `__init__`).
    #[pyo3(signature = (values=None, mutable=true))]
    fn _init(&mut self, values: Option<&Bound<'_, PyAny>>, mutable: bool) -> PyResult<()> {
        self.block = Arc::new(SparseBlock::new(sparse_pairs(values)?));
        self.mutable = mutable;
        Ok(())
    }

    /// A snapshot of the block as a dict of address to value.
    #[getter]
    fn values(&self) -> std::collections::BTreeMap<u16, u16> {
        self.block.values().into_iter().collect()
    }

    /// Whether `setValues` may add addresses.
    #[getter]
    fn mutable(&self) -> bool {
        self.mutable
    }

    /// Restores the values the block was built with.
    fn reset(&self) {
        self.block.reset();
    }

    /// True if `count` addresses from `address` are all defined.
    #[pyo3(signature = (address, count=1))]
    fn validate(&self, address: i64, count: usize) -> bool {
        valid(&*self.block, address, count)
    }

    /// `count` values from `address`.
    #[pyo3(signature = (address, count=1))]
    #[allow(non_snake_case)]
    fn getValues(&self, address: i64, count: usize) -> PyResult<Vec<u16>> {
        read_values(&*self.block, address, count)
    }

    /// Writes `values` (one, a list from `address`, or a dict) at once;
    /// a mutable block defines missing addresses.
    #[pyo3(signature = (address, values=None))]
    #[allow(non_snake_case)]
    fn setValues(&self, address: &Bound<'_, PyAny>, values: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let (start, values) = match values {
            Some(values) => (to_address(address.extract()?)?, to_registers(values)?),
            None => return self.set_dict(address),
        };
        self.add_missing(start, &values)?;
        self.block
            .write_registers(start, &values)
            .map_err(|c| block_error(c, start, values.len()))
    }
}

impl SparseDataBlock {
    /// `setValues({address: value, ...})`.
    fn set_dict(&self, pairs: &Bound<'_, PyAny>) -> PyResult<()> {
        let pairs = sparse_pairs(Some(pairs))?;
        for (address, value) in pairs {
            self.add_missing(address, &[value])?;
            self.block
                .write_registers(address, &[value])
                .map_err(|c| block_error(c, address, 1))?;
        }
        Ok(())
    }
}

/// Which of the block methods `obj`'s class overrides, against `base`.
fn overrides<T: pyo3::PyTypeInfo>(obj: &Bound<'_, PyAny>) -> PyResult<[bool; 3]> {
    let ty = obj.get_type();
    let base = obj.py().get_type::<T>();
    let mut out = [false; 3];
    for (flag, name) in out.iter_mut().zip(OVERRIDABLE) {
        *flag = !ty.getattr(name)?.is(&base.getattr(name)?);
    }
    Ok(out)
}

/// The storage the server uses for a Python block: the Rust block itself
/// for a plain block; for a subclass, a bridge that calls Python for what
/// the subclass overrides (reads stay in Rust when only `setValues` is
/// overridden); a block written wholly in Python is all Python.
pub fn storage_of(obj: &Bound<'_, PyAny>) -> PyResult<Arc<dyn DataBlock>> {
    let (inner, [get, set, validate]): (Arc<dyn DataBlock>, _) = if let Ok(b) = obj.downcast::<SequentialDataBlock>() {
        (b.borrow().block.clone(), overrides::<SequentialDataBlock>(obj)?)
    } else if let Ok(b) = obj.downcast::<SparseDataBlock>() {
        (b.borrow().block.clone(), overrides::<SparseDataBlock>(obj)?)
    } else if OVERRIDABLE.iter().all(|m| obj.hasattr(*m).unwrap_or(false)) {
        return Ok(Arc::new(PyBlock::python(obj)));
    } else {
        return Err(PyTypeError::new_err(format!(
            "{} is not a data block (it needs getValues, setValues and validate)",
            obj.get_type().name()?
        )));
    };
    if !(get || set || validate) {
        return Ok(inner);
    }
    Ok(Arc::new(PyBlock {
        obj: obj.clone().unbind(),
        reads: if get || validate { None } else { Some(inner.clone()) },
        writes: if set || validate { None } else { Some(inner) },
    }))
}

/// A block served by calling its Python methods with the GIL held.
pub(crate) struct PyBlock {
    /// The Python block object.
    obj: Py<PyAny>,
    /// The Rust block that serves reads, when the subclass leaves them alone.
    reads: Option<Arc<dyn DataBlock>>,
    /// The Rust block that serves writes, when the subclass leaves them alone.
    writes: Option<Arc<dyn DataBlock>>,
}

/// Exception 04 (server device failure): what a Python error answers.
const FAILURE: ExceptionCode = ExceptionCode::ServerDeviceFailure;

/// Runs `f` on `obj` with the GIL; a Python error is logged and answers 04.
pub(crate) fn call_python<T>(
    obj: &Py<PyAny>,
    what: &str,
    f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<Result<T, ExceptionCode>>,
) -> Result<T, ExceptionCode> {
    Python::with_gil(|py| match f(obj.bind(py)) {
        Ok(result) => result,
        Err(err) => {
            log::exception(py, &format!("{what} raised; answering exception 04"), &err);
            Err(FAILURE)
        }
    })
}

impl PyBlock {
    /// A block written wholly in Python.
    fn python(obj: &Bound<'_, PyAny>) -> Self {
        Self {
            obj: obj.clone().unbind(),
            reads: None,
            writes: None,
        }
    }

    /// Calls `method(address, arg)` on the block.
    fn invoke<'py, A>(obj: &Bound<'py, PyAny>, method: &str, address: u16, arg: A) -> PyResult<Bound<'py, PyAny>>
    where
        A: IntoPyObject<'py>,
    {
        obj.call_method1(method, (address, arg))
    }

    /// Runs `f` with the GIL; a Python error is logged and answers 04.
    fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<Result<T, ExceptionCode>>,
    ) -> Result<T, ExceptionCode> {
        call_python(&self.obj, &format!("data block {what}"), f)
    }

    /// `validate` then `getValues`, as pymodbus's server does.
    fn get(&self, obj: &Bound<'_, PyAny>, start: u16, count: usize) -> PyResult<Result<Vec<u16>, ExceptionCode>> {
        if !Self::invoke(obj, "validate", start, count)?.is_truthy()? {
            return Ok(Err(ExceptionCode::IllegalDataAddress));
        }
        let values = Self::invoke(obj, "getValues", start, count)?;
        let values: Vec<u16> = values.try_iter()?.map(|v| to_u16(&v?)).collect::<PyResult<_>>()?;
        if values.len() != count {
            return Err(PyValueError::new_err(format!(
                "getValues gave {} values for {count}",
                values.len()
            )));
        }
        Ok(Ok(values))
    }

    /// `validate` then `setValues` with `values`.
    fn set(
        &self,
        obj: &Bound<'_, PyAny>,
        start: u16,
        values: Bound<'_, PyList>,
    ) -> PyResult<Result<(), ExceptionCode>> {
        if !Self::invoke(obj, "validate", start, values.len())?.is_truthy()? {
            return Ok(Err(ExceptionCode::IllegalDataAddress));
        }
        Self::invoke(obj, "setValues", start, values)?;
        Ok(Ok(()))
    }
}

impl DataBlock for PyBlock {
    fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        if let Some(block) = &self.reads {
            return block.read_registers(start, out);
        }
        let values = self.call("getValues", |obj| self.get(obj, start, out.len()))?;
        out.copy_from_slice(&values);
        Ok(())
    }

    fn read_bits(&self, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        if let Some(block) = &self.reads {
            return block.read_bits(start, out);
        }
        let values = self.call("getValues", |obj| self.get(obj, start, out.len()))?;
        for (o, v) in out.iter_mut().zip(values) {
            *o = v != 0;
        }
        Ok(())
    }

    fn write_registers(&self, start: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        if let Some(block) = &self.writes {
            return block.write_registers(start, values);
        }
        self.call("setValues", |obj| self.set(obj, start, PyList::new(obj.py(), values)?))
    }

    fn write_bits(&self, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        if let Some(block) = &self.writes {
            return block.write_bits(start, values);
        }
        self.call("setValues", |obj| self.set(obj, start, PyList::new(obj.py(), values)?))
    }

    fn update(&self, address: u16, f: &mut dyn FnMut(u16) -> u16) -> Result<u16, ExceptionCode> {
        self.call("getValues/setValues", |obj| {
            let old = match self.get(obj, address, 1)? {
                Ok(v) => v.first().copied().unwrap_or_default(),
                Err(code) => return Ok(Err(code)),
            };
            let new = f(old);
            Ok(self.set(obj, address, PyList::new(obj.py(), [new])?)?.map(|()| new))
        })
    }

    fn write_read(
        &self,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let read = self.call("setValues/getValues", |obj| {
            if !Self::invoke(obj, "validate", read_start, out.len())?.is_truthy()? {
                return Ok(Err(ExceptionCode::IllegalDataAddress));
            }
            if let Err(code) = self.set(obj, write_start, PyList::new(obj.py(), values)?)? {
                return Ok(Err(code));
            }
            self.get(obj, read_start, out.len())
        })?;
        out.copy_from_slice(&read);
        Ok(())
    }

    fn reset(&self) {
        let _ = self.call("reset", |obj| obj.call_method0("reset").map(|_| Ok(())));
    }
}
