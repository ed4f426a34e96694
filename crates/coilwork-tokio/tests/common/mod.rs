//! The MBAP client and fixtures the tokio adapter's tests use: the
//! conformance suite's builders and its tokio client (shared with the
//! gateway's tests).
#![allow(dead_code, unused_imports)] // not every test file uses every helper

use std::time::Duration;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub use coilwork_conformance::client::{
    Answer, adu, adu_with_protocol, fc1, fc3, fc3_answer, fc15, fc16, pack, pdu, rtu,
};
pub use coilwork_conformance::fixture::plain_engine as engine;
pub use coilwork_conformance::tokio_client::{call, closed_by_server, connect, read_answer};
