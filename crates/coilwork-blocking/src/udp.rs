//! Modbus over UDP: each datagram is one ADU, answered to its sender.
//!
//! One thread (the one calling `serve_forever`) receives with a
//! socket read timeout of [`UdpServerConfig::poll_interval`], so it notices a
//! stop within that long. A hook's [`Delivery`](coilwork_core::Delivery)
//! pause (delay, split) is slept on that thread, so other clients wait for it
//! (as in the tokio adapter); a stop cuts it short.

use crate::ServerError;
use crate::drive::{Link, drive, is_timeout};
use crate::handle::ServerHandle;
use crate::server::{Server, Service};
use coilwork_core::options::MAX_DATAGRAM;
use coilwork_core::{CloseCause, Engine, Input, ServerStats, Session};
use coilwork_net::SocketOptions;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Settings of a [`UdpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::UdpServerConfig;

/// Counters of a [`UdpServer`]: datagrams received, answered, malformed
/// (not exactly one valid ADU) and refused (allow-list).
pub type UdpStats = ServerStats;

/// A blocking Modbus/UDP server over an [`Engine`]. [`UdpServer::new`] does not bind.
pub type UdpServer = Server<Udp>;

/// Modbus over UDP: the service of a [`UdpServer`].
#[derive(Debug, Default)]
pub struct Udp;

impl Service for Udp {
    type Config = UdpServerConfig;
    type Socket = UdpSocket;

    fn open(config: &UdpServerConfig) -> Result<(UdpSocket, SocketAddr), ServerError> {
        let socket = coilwork_net::udp_socket(&SocketOptions::from(config))?;
        // Blocking reads, bounded by the read timeout.
        socket.set_nonblocking(false)?;
        let addr = socket.local_addr()?;
        Ok((socket, addr))
    }

    fn serve(server: &UdpServer, socket: UdpSocket) -> Result<(), ServerError> {
        socket.set_read_timeout(Some(server.config.poll_interval.max(Duration::from_millis(1))))?;
        let shared = server
            .config
            .session(Arc::clone(&server.engine), Arc::clone(&server.stats));
        let mut session = Session::new(Arc::new(shared), Instant::now(), 0, None, None);
        let mut link = UdpLink {
            socket,
            // One byte more than the largest ADU, so an oversized datagram is seen as such.
            buf: vec![0u8; MAX_DATAGRAM + 1],
            peer: None,
            handle: &server.life.handle,
            error: None,
        };
        debug!(addr = ?server.local_addr(), "modbus udp server listening");
        let cause = drive(&mut session, &mut link);
        debug!(?cause, "modbus udp server stopped");
        match link.error {
            Some(e) if cause == CloseCause::IoError => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl UdpServer {
    /// Datagrams dropped as malformed so far.
    pub fn malformed_count(&self) -> u64 {
        self.stats.malformed()
    }
}

/// The socket of a [`UdpServer`]; a hook's delivery pause is slept here, so
/// other clients wait for it.
struct UdpLink<'a> {
    socket: UdpSocket,
    buf: Vec<u8>,
    /// The last sender: where answers go.
    peer: Option<SocketAddr>,
    handle: &'a ServerHandle,
    /// Why receiving failed, once it did.
    error: Option<std::io::Error>,
}

impl Link for UdpLink<'_> {
    fn handle(&self) -> &ServerHandle {
        self.handle
    }

    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        if let Some(peer) = self.peer
            && let Err(e) = self.socket.send_to(out, peer)
        {
            debug!(%peer, error = %e, "udp send failed");
        }
        Ok(())
    }

    fn wait(&mut self, session: &mut Session, _deadline: Option<Instant>) {
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let bytes = self.buf.get(..n).unwrap_or(&[]);
                let from = Some(from);
                // The session answers each datagram before the next is read.
                self.peer = from;
                session.handle(Instant::now(), Input::Datagram { bytes, from });
            }
            Err(e) if is_timeout(&e) || is_transient(&e) => {}
            Err(e) => {
                warn!(error = %e, "udp receive failed");
                self.error = Some(e);
                session.handle(Instant::now(), Input::Failed);
            }
        }
    }
}

/// Receive errors that concern one datagram only (ICMP port unreachable and the like).
fn is_transient(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused)
}

/// Binds `config.address` and serves `engine` on the calling thread (pymodbus `StartUdpServer`).
pub fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<(), ServerError> {
    UdpServer::new(engine, config).serve_forever()
}

/// Binds `config.address` (the bind error is returned here) and serves
/// `engine` on a new thread; returns the handle that stops it.
pub fn start_udp_server_in_background(
    engine: Arc<Engine>,
    config: UdpServerConfig,
) -> Result<ServerHandle, ServerError> {
    UdpServer::new(engine, config).start_in_background("coilwork-udp")
}
