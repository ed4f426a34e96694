//! Custom function codes: a `ModbusPDU` subclass served through Python.

use crate::log;
use coilwork_core::ExceptionCode;
use coilwork_core::engine::CustomFunction;
use coilwork_core::frame::PduLength;
use coilwork_core::pdu::PduBuf;
use coilwork_core::storage::{RequestContext, Storage};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A request class whose `execute` answers one function code.
pub struct PyCustom {
    /// The function code.
    code: u8,
    /// Whole request PDU length on RTU (from `rtu_frame_size`), if fixed.
    pdu_len: Option<usize>,
    /// The `ModbusPDU` subclass.
    class: Py<PyAny>,
    /// `coilwork.pdu._execute(class, data, device_id, context) -> bytes`.
    runner: Py<PyAny>,
    /// The Python server context handed to `execute` (by device).
    context: Py<PyAny>,
}

impl PyCustom {
    /// Reads the class's `function_code` (and `rtu_frame_size`).
    pub fn new(class: &Bound<'_, PyAny>, runner: Py<PyAny>, context: Py<PyAny>) -> PyResult<Self> {
        let code: u8 = class.getattr("function_code")?.extract()?;
        let frame: Option<usize> = class.getattr("rtu_frame_size").ok().and_then(|v| v.extract().ok());
        Ok(Self {
            code,
            pdu_len: frame.filter(|&n| n > 3).map(|n| n - 3),
            class: class.clone().unbind(),
            runner,
            context,
        })
    }
}

impl CustomFunction for PyCustom {
    fn function_code(&self) -> u8 {
        self.code
    }

    fn request_pdu_length(&self, _pdu: &[u8]) -> PduLength {
        self.pdu_len.map_or(PduLength::Unknown, PduLength::Exact)
    }

    fn execute(
        &self,
        ctx: &RequestContext<'_>,
        _storage: &dyn Storage,
        data: &[u8],
        response: &mut PduBuf,
    ) -> Result<(), ExceptionCode> {
        Python::with_gil(|py| {
            let args = (
                self.class.clone_ref(py),
                PyBytes::new(py, data),
                ctx.unit,
                self.context.clone_ref(py),
            );
            match self.runner.call1(py, args).and_then(|r| r.extract::<Vec<u8>>(py)) {
                Ok(pdu) => response.set(&pdu).map_err(|_| ExceptionCode::ServerDeviceFailure),
                Err(err) => {
                    let what = format!("custom function {:#04x} raised; answering exception 04", self.code);
                    log::exception(py, &what, &err);
                    Err(ExceptionCode::ServerDeviceFailure)
                }
            }
        })
    }
}
