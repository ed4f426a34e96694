//! Free loopback ports for tests that must name a port before a server binds it.
//!
//! Binding port 0 and dropping the listener hands back a port from the
//! kernel's ephemeral range (32768–60999 on Linux), the same range every
//! outgoing connection of every parallel test draws its local port from, so
//! a client elsewhere may take it before the server under test binds it.
//! These helpers pick ports below that range instead, starting at a place
//! that differs per process and never handing the same port out twice in one
//! process, and check that the port is free on both TCP and UDP.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first port handed out, inclusive.
const LOW: u32 = 20_000;
/// How many ports lie between [`LOW`] and the ephemeral range.
const SPAN: u32 = 12_000;

/// How many ports this process has tried so far.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port free on TCP and UDP, outside the ephemeral range.
///
/// # Panics
/// When every port in the range is taken (test code only).
pub fn free_port() -> u16 {
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let Ok(port) = u16::try_from(LOW + offset) else {
            continue;
        };
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN); // ok: test code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, and below the ephemeral range. That each was free on TCP
    /// and UDP is checked inside `free_port` when it is handed out; binding
    /// it again later would only test that nobody else took it since, which
    /// nothing can promise (a CI run once saw exactly that).
    #[test]
    fn ports_are_distinct_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
        for p in &ports {
            assert!((20_000..32_000).contains(p), "{p}");
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }
}
