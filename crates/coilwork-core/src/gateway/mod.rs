//! Gateway decisions, sans-IO: which upstream a unit id goes to, a fair
//! bounded queue per upstream, reconnect backoff, read-only and role
//! policy, upstream state changes and per-upstream statistics.
//!
//! A driver (see the `coilwork-gateway` crate) owns the sockets: it asks the
//! [`Router`] where a request goes, checks the [`Policy`], pushes it onto
//! the upstream's [`FairQueue`] (full: exception 06) and hands it to a
//! [`crate::client::Upstream`] when that one can take it. Failures map to
//! exceptions: no answer in time → 0x0B, upstream unreachable → 0x0A.

mod backoff;
mod policy;
mod queue;
mod route;
mod stats;

pub use backoff::Backoff;
pub use policy::Policy;
pub use queue::{FairQueue, QueueFull};
pub use route::{Route, RouteError, Router, Target, parse_units};
pub use stats::{LinkState, StateTracker, UpstreamStats};

use crate::ExceptionCode;

/// The two-byte PDU of exception `code` for a request with `function`.
pub const fn exception_pdu(function: u8, code: ExceptionCode) -> [u8; 2] {
    [function | 0x80, code.code()]
}
