//! # coilwork's Python binding
//!
//! The Rust half of the `coilwork` Python package: data blocks and contexts
//! backed by coilwork-core storage, and servers run by coilwork-tokio on a
//! runtime of their own, with the GIL released while they serve. Plain
//! blocks are served without entering Python; subclasses that override
//! `getValues` / `setValues` / `validate` and custom function codes are
//! called with the GIL held. The pymodbus-shaped API is in the Python
//! modules beside this crate.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod blocks;
mod context;
mod custom;
mod hook;
mod log;
mod overrides;
mod server;
mod session;
mod sim;
mod trace;

use pyo3::prelude::*;

/// The extension module `coilwork._coilwork`.
#[pymodule]
fn _coilwork(m: &Bound<'_, PyModule>) -> PyResult<()> {
    trace::install();
    m.add_class::<blocks::SequentialDataBlock>()?;
    m.add_class::<blocks::SparseDataBlock>()?;
    m.add_class::<context::DeviceContextPy>()?;
    m.add_class::<context::ServerContextPy>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<sim::SimulatorPy>()?;
    Ok(())
}
