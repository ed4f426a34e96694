//! Coilwork: a Modbus server stack.
//!
//! This facade re-exports the crates of the workspace so that one dependency
//! brings in what most users need: [`core`] is the sans-IO engine
//! (`coilwork_core`), [`tokio`] the servers on the tokio runtime
//! (`coilwork_tokio`: TCP, UDP and serial). The `examples/` folder shows the
//! usual servers; run one with `cargo run --example simple_tcp_server`.

pub use coilwork_core as core;
pub use coilwork_tokio as tokio;
