//! Socket set-up shared by the servers.

use crate::ServerError;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::ErrorKind;
use std::net::SocketAddr;

/// How to open a listening or datagram socket.
pub(crate) struct SocketOptions {
    pub addr: SocketAddr,
    pub reuse_address: bool,
    pub reuse_port: bool,
}

fn setup_err(addr: SocketAddr) -> impl Fn(std::io::Error) -> ServerError {
    move |source| ServerError::Socket { addr, source }
}

fn bind_err(addr: SocketAddr, source: std::io::Error) -> ServerError {
    if source.kind() == ErrorKind::AddrInUse {
        ServerError::AddrInUse { addr, source }
    } else {
        ServerError::Bind { addr, source }
    }
}

fn open(opts: &SocketOptions, ty: Type, protocol: Protocol) -> Result<Socket, ServerError> {
    let addr = opts.addr;
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol)).map_err(setup_err(addr))?;
    socket.set_reuse_address(opts.reuse_address).map_err(setup_err(addr))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    if opts.reuse_port {
        socket.set_reuse_port(true).map_err(setup_err(addr))?;
    }
    socket.bind(&addr.into()).map_err(|e| bind_err(addr, e))?;
    Ok(socket)
}

/// A bound, listening TCP socket in non-blocking mode (the accept loop polls it).
pub(crate) fn tcp_listener(opts: &SocketOptions, backlog: u32) -> Result<std::net::TcpListener, ServerError> {
    let socket = open(opts, Type::STREAM, Protocol::TCP)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(|e| bind_err(opts.addr, e))?;
    socket.set_nonblocking(true).map_err(setup_err(opts.addr))?;
    Ok(socket.into())
}

/// A bound, blocking UDP socket (reads are bounded by a read timeout).
pub(crate) fn udp_socket(opts: &SocketOptions) -> Result<std::net::UdpSocket, ServerError> {
    Ok(open(opts, Type::DGRAM, Protocol::UDP)?.into())
}

/// True for the error a read returns when its read timeout passed
/// (`WouldBlock` on Unix, `TimedOut` on Windows and from serial ports).
pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A read timeout for the next read: until `deadline` but at most `poll`,
/// and at least 1 ms (a zero read timeout is an error for std sockets).
pub(crate) fn read_timeout(
    now: std::time::Instant,
    deadline: Option<std::time::Instant>,
    poll: std::time::Duration,
) -> std::time::Duration {
    let until = deadline.map_or(poll, |d| d.saturating_duration_since(now).min(poll));
    until.max(std::time::Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn read_timeout_is_bounded_both_ways() {
        let now = Instant::now();
        let poll = Duration::from_millis(100);
        assert_eq!(read_timeout(now, None, poll), poll);
        assert_eq!(
            read_timeout(now, Some(now + Duration::from_millis(30)), poll),
            Duration::from_millis(30)
        );
        assert_eq!(read_timeout(now, Some(now + Duration::from_secs(9)), poll), poll);
        assert_eq!(read_timeout(now, Some(now), poll), Duration::from_millis(1));
    }
}
