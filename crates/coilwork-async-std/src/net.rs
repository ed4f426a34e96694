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
    socket.set_nonblocking(true).map_err(setup_err(addr))?;
    socket.bind(&addr.into()).map_err(|e| bind_err(addr, e))?;
    Ok(socket)
}

/// A bound, listening, non-blocking TCP socket.
pub(crate) fn tcp_listener(opts: &SocketOptions, backlog: u32) -> Result<std::net::TcpListener, ServerError> {
    let socket = open(opts, Type::STREAM, Protocol::TCP)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(|e| bind_err(opts.addr, e))?;
    Ok(socket.into())
}

/// A bound, non-blocking UDP socket.
pub(crate) fn udp_socket(opts: &SocketOptions) -> Result<std::net::UdpSocket, ServerError> {
    Ok(open(opts, Type::DGRAM, Protocol::UDP)?.into())
}
