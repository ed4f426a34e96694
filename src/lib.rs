//! Coilwork: a Modbus server stack.
//!
//! This facade re-exports the crates of the workspace so that one dependency
//! brings in what most users need. See `coilwork_core` for the sans-IO engine.

pub use coilwork_core as core;
