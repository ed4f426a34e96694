//! # coilwork-tokio: Modbus servers on the tokio runtime
//!
//! This crate binds sockets, opens serial ports and runs TLS handshakes;
//! the loops that move bytes and time between them and a
//! [`coilwork_core::Session`] are `coilwork-driver`'s, run on tokio (spawned
//! connection tasks, tokio timers). Every protocol and lifecycle decision
//! lives in `coilwork-core` (see the adapter contract in [`coilwork_core::session`]).
//!
//! - [`TcpServer`]: Modbus/TCP (MBAP, or RTU / ASCII framing over TCP), one
//!   task per connection, pipelined requests answered in one write.
//! - [`UdpServer`]: one datagram is one ADU, answered to its sender.
//! - `SerialServer` (feature `serial`, on by default): RTU or ASCII on a
//!   serial line, with the line's t3.5 silences driven by tokio timers.
//! - `TlsServer` (feature `tls`, on by default): Modbus/TCP Security
//!   (mbaps) over rustls, with client certificates and roles; the TCP
//!   server's connection loop after a TLS handshake.
//! - [`ServerHandle`]: a cloneable stop switch usable from any task or thread.
//!
//! [`start_tcp_server`] / [`start_udp_server`] (and `start_tls_server`) and [`ServerHandle::shutdown`]
//! mirror pymodbus's `StartAsyncTcpServer` / `ServerAsyncStop`.
#![forbid(unsafe_code)]

mod rt;
#[cfg(feature = "serial")]
pub mod serial;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;

pub use coilwork_core::ServerError;
pub use coilwork_driver::ServerHandle;
#[cfg(feature = "serial")]
pub use serial::{Parity, SerialServer, SerialServerConfig, SerialStats, start_serial_server};
pub use tcp::{OverflowPolicy, TcpServer, TcpServerConfig, TcpStats, start_tcp_server};
#[cfg(feature = "tls")]
pub use tls::{TlsClientAuth, TlsConfig, TlsError, TlsServer, TlsServerConfig, start_tls_server};
pub use udp::{UdpServer, UdpServerConfig, UdpStats, start_udp_server};

/// Default Modbus port.
pub const MODBUS_PORT: u16 = 502;
