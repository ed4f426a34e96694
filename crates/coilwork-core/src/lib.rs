//! # coilwork-core: the sans-IO Modbus server engine
//!
//! No sockets, no runtime, no clock of its own: bytes and time go in, bytes
//! and deadlines come out. Adapters (tokio, async-std/smol, blocking threads)
//! move bytes between a transport and a [`Session`]; every protocol
//! and lifecycle decision lives here.
//!
//! The pieces, one module per concept:
//! - [`frame`]: MBAP, RTU and ASCII stream decoders and encoders;
//! - [`pdu`]: request and response PDUs for every public function code,
//!   decoded with nom and encoded into a caller's buffer;
//! - [`storage`]: the [`Storage`] trait users implement, the built-in blocks,
//!   device context and server context;
//! - [`engine`]: executes requests against storage in the spec's validation
//!   order, with identity, diagnostics, hooks and custom function codes;
//! - [`session`]: the whole life of one connection, datagram socket or
//!   serial line: the one thing an adapter drives (its module rustdoc is the
//!   adapter contract);
//! - [`server`]: server-level policy: admission, counters, the server error;
//! - [`metrics`]: requests, exceptions, latency and dropped frames counted
//!   per session and folded in at a low rate; Prometheus text exposition;
//! - [`options`]: the settings shared by every transport and adapter;
//! - [`connection`]: framing and execution of one byte stream (inside a session);
//! - [`timeouts`]: a stream connection's partial-frame, idle and
//!   buffer-release deadlines (inside a session);
//! - [`close`]: a server's request that one connection close (stop, eviction);
//! - `security` and `role_policy` (features `mbaps`, `role-policy`): a client
//!   certificate's Modbus/TCP Security role, and a TOML policy of what each
//!   role may do;
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
pub mod metrics;
pub mod options;
pub mod pdu;
#[cfg(feature = "role-policy")]
pub mod role_policy;
#[cfg(feature = "mbaps")]
pub mod security;
pub mod server;
pub mod session;
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
pub use metrics::{Metrics, Tally};
pub use options::{AdmissionOptions, Overflow, Parity, SocketOptions, StreamOptions};
pub use server::{Admission, SerialStats, ServerError, ServerStats, Verdict};
pub use session::{CloseCause, Input, Output, Session, SessionConfig, SessionKind};
pub use storage::{RequestContext, Storage, Table, Transport};
pub use timeouts::{Expired, StreamTimeoutConfig, StreamTimeouts};
