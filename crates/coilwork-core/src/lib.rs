//! # coilwork-core: the sans-IO Modbus server engine
//!
//! No sockets, no runtime, no clock of its own: bytes and time go in, bytes
//! and deadlines come out. Adapters (tokio, async-std/smol, blocking threads)
//! move bytes between a transport and a [`Connection`]; every protocol
//! decision lives here.
//!
//! The pieces, one module per concept:
//! - [`frame`]: MBAP, RTU and ASCII stream decoders and encoders;
//! - [`pdu`]: request and response PDUs for every public function code,
//!   decoded with nom and encoded into a caller's buffer;
//! - [`storage`]: the [`Storage`] trait users implement, the built-in blocks,
//!   device context and server context;
//! - [`engine`]: executes requests against storage in the spec's validation
//!   order, with identity, diagnostics, hooks and custom function codes;
//! - [`connection`]: the per-connection state machine an adapter drives;
//! - [`timeouts`]: a stream connection's partial-frame, idle and
//!   buffer-release deadlines;
//! - [`close`]: a server's request that one connection close (stop, eviction);
//! - [`client`]: the upstream side of a gateway: forwarded requests framed
//!   and their answers matched (MBAP transaction ids, RTU/ASCII with t3.5);
//! - [`gateway`]: a gateway's routing, fair bounded queues, backoff, policy
//!   and per-upstream statistics.
//!
//! Addresses are zero-based protocol addresses unless a device is built in
//! one-based mode (pymodbus's `zero_mode=False`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod address;
pub mod client;
pub mod close;
pub mod connection;
pub mod diagnostics;
pub mod engine;
pub mod error;
pub mod exception;
pub mod frame;
pub mod function;
pub mod gateway;
pub mod identity;
pub mod pdu;
#[cfg(feature = "mbaps")]
pub mod security;
pub mod storage;
pub mod timeouts;

pub use address::AddressRange;
pub use close::{CloseReason, CloseSignal};
pub use connection::{Connection, ConnectionConfig};
pub use engine::{Delivery, Engine, EngineBuilder, EngineOptions};
pub use error::{ConfigError, ConnectionError, FrameError};
pub use exception::ExceptionCode;
pub use frame::Framing;
pub use function::FunctionCode;
pub use identity::Identity;
pub use storage::{RequestContext, Storage, Table, Transport};
pub use timeouts::{Expired, StreamTimeoutConfig, StreamTimeouts};
