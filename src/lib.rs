//! Coilwork: a Modbus server stack.
//!
//! This facade re-exports the crates of the workspace so that one dependency
//! brings in what most users need: [`core`] is the sans-IO engine
//! (`coilwork_core`), [`tokio`] the servers on the tokio runtime
//! (`coilwork_tokio`: TCP, UDP, serial and TLS), [`async_std`] the same
//! servers on async-std, smol or any async-io executor (`coilwork_async_std`),
//! [`blocking`] the same servers on plain threads, with no async runtime
//! (`coilwork_blocking`), and [`tls`] the Modbus/TCP Security configuration
//! they share (`coilwork_tls`). The `examples/` folder shows the usual
//! servers; run one with `cargo run --example simple_tcp_server`
//! (also `blocking_tcp_server`, `async_std_tcp_server`, `smol_tcp_server`,
//! `tls_server`).

pub use coilwork_async_std as async_std;
pub use coilwork_blocking as blocking;
pub use coilwork_core as core;
pub use coilwork_tls as tls;
pub use coilwork_tokio as tokio;
