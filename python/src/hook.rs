//! A server subclass's `validate_device_id` / `process_request` overrides,
//! called per request with the GIL held (a request hook: the slow path,
//! installed only when a subclass overrides one of them).

use crate::log;
use coilwork_core::ExceptionCode;
use coilwork_core::engine::{HookAction, RequestHook};
use coilwork_core::pdu::{PduBuf, Request};
use coilwork_core::storage::RequestContext;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The Python callbacks of a server subclass.
pub struct PyServerHook {
    /// `(device_id) -> bool`: false treats the request as for a missing device.
    validate: Option<Py<PyAny>>,
    /// `(device_id, pdu, client) -> bytes | None`: a response PDU, or None to execute as usual.
    process: Option<Py<PyAny>>,
    /// The server's `ignore_missing_devices` (None: only on a serial line).
    ignore_missing: Option<bool>,
}

impl PyServerHook {
    /// A hook over the callbacks given (None when neither is).
    pub fn new(validate: Option<Py<PyAny>>, process: Option<Py<PyAny>>, ignore_missing: Option<bool>) -> Option<Self> {
        (validate.is_some() || process.is_some()).then_some(Self {
            validate,
            process,
            ignore_missing,
        })
    }

    /// What a device id refused by `validate_device_id` gets: what a missing device gets.
    fn refused(&self, ctx: &RequestContext<'_>) -> HookAction {
        if self.ignore_missing.unwrap_or(ctx.transport.is_serial()) {
            HookAction::NoResponse
        } else {
            HookAction::Exception(ExceptionCode::GatewayTargetFailedToRespond)
        }
    }

    /// Calls `validate_device_id`; a Python error counts as refused (and is logged).
    fn valid(&self, py: Python<'_>, validate: &Py<PyAny>, unit: u8) -> bool {
        match validate.call1(py, (unit,)).and_then(|r| r.is_truthy(py)) {
            Ok(valid) => valid,
            Err(err) => {
                log::exception(py, "validate_device_id raised; the request is refused", &err);
                false
            }
        }
    }

    /// Calls `process_request` with the request PDU (encoded into `response`,
    /// which then receives the answer if Python gives one).
    fn process(
        &self,
        py: Python<'_>,
        process: &Py<PyAny>,
        ctx: &RequestContext<'_>,
        request: &Request<'_>,
        response: &mut PduBuf,
    ) -> HookAction {
        if request.encode(response).is_err() {
            return HookAction::Continue;
        }
        let client = ctx.peer.map(|p| (p.ip().to_string(), p.port()));
        let pdu = PyBytes::new(py, response.as_slice());
        let answer = process
            .call1(py, (ctx.unit, pdu, client))
            .and_then(|r| r.extract::<Option<Vec<u8>>>(py));
        match answer {
            Ok(None) => HookAction::Continue,
            Ok(Some(pdu)) if !pdu.is_empty() && response.set(&pdu).is_ok() => HookAction::Respond,
            Ok(Some(pdu)) => {
                let err = PyValueError::new_err(format!("a response PDU of {} bytes (1..=253 expected)", pdu.len()));
                log::exception(py, "process_request gave a bad response; answering exception 04", &err);
                HookAction::Exception(ExceptionCode::ServerDeviceFailure)
            }
            Err(err) => {
                log::exception(py, "process_request raised; answering exception 04", &err);
                HookAction::Exception(ExceptionCode::ServerDeviceFailure)
            }
        }
    }
}

impl RequestHook for PyServerHook {
    fn on_request(&self, ctx: &RequestContext<'_>, request: &mut Request<'_>, response: &mut PduBuf) -> HookAction {
        Python::with_gil(|py| {
            if let Some(validate) = &self.validate {
                // A serial broadcast (unit 0) is for every device.
                let broadcast = ctx.unit == 0 && ctx.transport.is_serial();
                if !broadcast && !self.valid(py, validate, ctx.unit) {
                    return self.refused(ctx);
                }
            }
            match &self.process {
                Some(process) => self.process(py, process, ctx, request, response),
                None => HookAction::Continue,
            }
        })
    }
}
