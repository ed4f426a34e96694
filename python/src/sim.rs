//! `ModbusSimulatorServer` on coilwork-sim: pymodbus's simulator JSON, the
//! Modbus server it describes, and the HTTP page and API.

use crate::log;
use coilwork_core::ExceptionCode;
use coilwork_sim::{ActionContext, Simulator, SimulatorHandle, SimulatorOptions};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::Runtime;

/// A simulator built from a JSON file (or the built-in default).
#[pyclass(module = "coilwork._coilwork", name = "Simulator")]
pub struct SimulatorPy {
    /// Owned runtime; shut down in the background when dropped.
    runtime: Option<Runtime>,
    /// The simulator.
    sim: Simulator,
    /// The running simulator, once started.
    handle: Mutex<Option<SimulatorHandle>>,
}

impl Drop for SimulatorPy {
    fn drop(&mut self) {
        if let Some(h) = self.handle.lock().unwrap_or_else(PoisonError::into_inner).take() {
            h.stop();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[pymethods]
impl SimulatorPy {
    #[new]
    #[pyo3(signature = (json_file=None, modbus_server=None, modbus_device=None, http_host=None, http_port=None,
        web_app_path=None, actions=Vec::new(), runner=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        json_file: Option<String>,
        modbus_server: Option<String>,
        modbus_device: Option<String>,
        http_host: Option<String>,
        http_port: Option<u16>,
        web_app_path: Option<String>,
        actions: Vec<(String, Py<PyAny>)>,
        runner: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let mut options = SimulatorOptions::default();
        for (name, action) in actions {
            let runner = runner
                .as_ref()
                .map(|r| Python::with_gil(|py| r.clone_ref(py)))
                .ok_or_else(|| PyValueError::new_err("custom actions need a runner"))?;
            let what = format!("custom action {name:?} raised; answering exception 04");
            options = options.action(name, move |ctx: &mut ActionContext<'_>| {
                run_action(&runner, &action, &what, ctx)
            });
        }
        options.modbus_server = modbus_server;
        options.modbus_device = modbus_device;
        options.http_host = http_host;
        options.http_port = http_port;
        options.web_app_path = web_app_path.map(Into::into);
        let sim = match json_file {
            Some(path) => Simulator::from_file(path, options),
            None => Simulator::with_default_config(options),
        }
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("coilwork-sim")
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the runtime: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
            sim,
            handle: Mutex::new(None),
        })
    }

    /// Starts the Modbus server and the HTTP server; returns their `(host, port)`s.
    #[allow(clippy::type_complexity)]
    fn start(&self, py: Python<'_>) -> PyResult<(Option<(String, u16)>, Option<(String, u16)>)> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the simulator is gone"))?;
        let handle = py
            .allow_threads(|| rt.block_on(self.sim.start()))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let addr = |a: Option<std::net::SocketAddr>| a.map(|a| (a.ip().to_string(), a.port()));
        let addrs = (addr(handle.local_addr()), addr(handle.http_addr()));
        *self.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(addrs)
    }

    /// Asks the simulator to stop; returns at once.
    fn stop(&self) {
        if let Some(h) = self.handle.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            h.stop();
        }
        self.sim.stop();
    }

    /// Waits up to `timeout` seconds (GIL released) for the simulator to stop; True once stopped.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the simulator is gone"))?;
        let Some(handle) = self.handle.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return Ok(true);
        };
        let limit = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        Ok(py.allow_threads(|| rt.block_on(async { tokio::time::timeout(limit, handle.stopped()).await.is_ok() })))
    }
}

/// Runs a Python custom action on `ctx`'s cells with the GIL held, through
/// `runner(action, values, types, writable, index, parameters_json)`, which
/// returns the cells' values afterwards; changed values are written back.
fn run_action(
    runner: &Py<PyAny>,
    action: &Py<PyAny>,
    what: &str,
    ctx: &mut ActionContext<'_>,
) -> Result<(), ExceptionCode> {
    let values: Vec<u16> = ctx.cells.iter().map(|c| c.value).collect();
    let types: Vec<String> = ctx
        .cells
        .iter()
        .map(|c| format!("{:?}", c.kind).to_uppercase())
        .collect();
    let writable: Vec<bool> = ctx.cells.iter().map(|c| c.writable).collect();
    let parameters = serde_json::Value::Object(ctx.parameters.clone()).to_string();
    Python::with_gil(|py| {
        let args = (action.clone_ref(py), values, types, writable, ctx.index, parameters);
        match runner.call1(py, args).and_then(|r| r.extract::<Vec<u16>>(py)) {
            Ok(after) => {
                for (cell, value) in ctx.cells.iter_mut().zip(after) {
                    cell.value = value;
                }
                Ok(())
            }
            Err(err) => {
                log::exception(py, what, &err);
                Err(ExceptionCode::ServerDeviceFailure)
            }
        }
    })
}
