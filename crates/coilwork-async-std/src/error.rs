//! Errors of the adapters.

use std::net::SocketAddr;

/// Why a server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another socket already listens on the address.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound (permission, not local, ...).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be created or configured.
    #[error("cannot set up socket for {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A serial port could not be opened (and `auto_open` is off).
    #[error("cannot open serial port {port}: {source}")]
    SerialOpen {
        /// The device path.
        port: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `serve_forever` was called while the server is already serving.
    #[error("server is already serving")]
    AlreadyServing,
    /// The server was closed (stopped or `server_close`d) and cannot serve again.
    #[error("server is closed")]
    Closed,
    /// A receive or send on the server's socket failed in a way it cannot recover from.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}
